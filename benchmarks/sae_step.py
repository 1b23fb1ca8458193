"""One full top-k SAE training step vs one dense (batch x d) @ (d x n) matmul, same process.

A step = encoder product, top-k, sparse decode, MSE/Var + AuxK loss, sparse backward,
decoder-gradient projection, fused Adam, decoder renormalisation. A fraction of latents is
held dead (--dead-fraction) so that AuxK does real work every step.

    python benchmarks/sae_step.py --d 1280 --n 5120 --k 10 --batch 4096
    python benchmarks/sae_step.py --d 3072 --n 24576 --k 64 --batch 2048
    python benchmarks/sae_step.py --device cuda --d 3072 --n 65536 --k 64 --batch 4096
Last line: ratio_to_matmul=<float>  (on the CPU: min step CPU time / min matmul CPU time,
interleaved reps, the wall-clock ratio printed above it; on a GPU: the synchronised
wall-clock ratio, the matmul on the same device)
"""

from __future__ import annotations

import argparse

import torch

from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--n", type=int, default=5120)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--k-aux", type=int, default=256)
    parser.add_argument(
        "--dead-fraction", type=float, default=0.02, help="fraction of latents kept dead so AuxK runs (default 0.02)"
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = TopKSAEConfig(d=args.d, n=args.n, k=args.k, k_aux=args.k_aux, dead_tokens=1_000_000)
    sae = TopKSAE(config).to(device)
    x = torch.randn(args.batch, args.d).to(device)
    sae.initialize(x)
    n_dead = int(round(args.dead_fraction * args.n))
    dead = torch.randperm(args.n)[:n_dead].to(device)
    # Dead latents must not fire: push their pre-activations just below the top-k threshold
    # (so some stay positive and AuxK has real work), as a starved latent would be.
    pre = sae.pre_activations(x)
    kth = pre.topk(args.k, dim=1).values[:, -1]
    sae.b_enc[dead] -= float(kth.max()) - float(pre[:, dead].median())
    del pre

    def hold_dead() -> None:
        sae.tokens_since_fired.zero_()
        sae.tokens_since_fired[dead] = config.dead_tokens

    def matmul() -> None:
        torch.mm(x, sae.W_enc.t())

    last = {}

    def step() -> None:
        last["stats"] = sae.train_step(x)

    for _ in range(2):  # warm-up: Adam state allocation, allocator caches
        hold_dead()
        step()
        matmul()
    timings = interleaved(matmul, step, args.reps, device, before_candidate=hold_dead)
    stats = last["stats"]
    if n_dead and not (stats.dead_fraction > 0 and stats.aux_loss > 0):
        raise RuntimeError(f"AuxK did no work (dead fraction {stats.dead_fraction}, aux loss {stats.aux_loss})")
    best_step, best_matmul = min(timings.candidate_wall), min(timings.baseline_wall)
    step_times, matmul_times = timings.candidate_wall, timings.baseline_wall
    step_cpu, matmul_cpu = timings.candidate_cpu, timings.baseline_cpu
    wall_ratio = timings.wall_ratio
    ratio = timings.ratio(device)
    print(
        f"shape: batch={args.batch} d={args.d} n={args.n} k={args.k} k_aux={args.k_aux} "
        f"dead={n_dead} ({args.dead_fraction:.1%}) threads={torch.get_num_threads()} device={device}"
    )
    print(f"last step: dead_fraction={stats.dead_fraction:.4f} aux_loss={stats.aux_loss:.4f} l0={stats.l0:.1f}")
    print(f"matmul  min {best_matmul * 1e3:8.1f} ms  all {[round(t * 1e3) for t in matmul_times]}")
    print(f"step    min {best_step * 1e3:8.1f} ms  all {[round(t * 1e3) for t in step_times]}")
    print(
        f"cpu time: matmul min {min(matmul_cpu) * 1e3:.1f} ms, step min {min(step_cpu) * 1e3:.1f} ms; "
        f"wall-clock ratio {wall_ratio:.3f}"
    )
    print(f"ratio_to_matmul={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
