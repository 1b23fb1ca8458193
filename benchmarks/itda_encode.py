"""ITDA sparse coding of a batch vs one dense (batch x d) @ (d x m) product, and the FVU reached.

The dictionary is m real activations (unit-normed), as ITDA builds it; the batch is other
activations of the same synthetic world (tokens = positive sparse combinations of planted
directions plus noise). Reference FVU: Leask's matching pursuit (dense coefficients, a full
residual product per iteration) on the same batch with the same L.

    python benchmarks/itda_encode.py --d 1280 --m 8192 --L 32 --batch 2048
    python benchmarks/itda_encode.py --device cuda --d 3072 --m 65536 --L 64 --batch 4096
Last line: ratio_to_matmul=<float> fvu=<float>  (CPU-time ratio on the CPU, wall-clock ratio printed
above; on a GPU the synchronised wall-clock ratio, the matmul on the same device)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from diffdict.dictionaries.itda import ITDA, ITDAConfig
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)


def synthetic_activations(count: int, d: int, planted: int, active: int, generator: torch.Generator) -> torch.Tensor:
    directions = torch.randn(planted, d, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    idx = torch.randint(0, planted, (count, active), generator=generator)
    weights = torch.rand(count, active, generator=generator) * 2
    x = F.embedding_bag(idx, directions, per_sample_weights=weights, mode="sum")
    return x + 0.1 * torch.randn(count, d, generator=generator) / d**0.5 * x.norm(dim=1, keepdim=True)


def leask_matching_pursuit(x: torch.Tensor, atoms: torch.Tensor, L: int) -> torch.Tensor:
    """Reference: dense coefficients, residual correlations recomputed every iteration."""
    residual, coef = x.clone(), torch.zeros(x.shape[0], atoms.shape[0], device=x.device)
    for _ in range(L):
        corr = residual @ atoms.t()
        pick = corr.abs().argmax(1)
        amount = corr.gather(1, pick[:, None])
        coef.scatter_add_(1, pick[:, None], amount)
        residual -= amount * atoms[pick]
    return coef @ atoms


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--L", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--pursuit", default="matching", choices=["matching", "gradient"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-reference", action="store_true", help="also time Leask's loop (slow)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    data = synthetic_activations(args.m + args.batch, args.d, planted=4 * args.d, active=24, generator=generator)
    data = data.to(device)
    itda = ITDA(ITDAConfig(d=args.d, L=args.L, pursuit=args.pursuit)).to(device)
    itda._append(data[: args.m], None, torch.arange(args.m, device=device))  # a full dictionary of real activations
    x = data[args.m :]
    atoms = itda.atoms

    def matmul() -> None:
        torch.mm(x, atoms.t())

    result = {}

    def encode() -> None:
        result["code"] = itda.encode(x)

    encode()
    matmul()
    timings = interleaved(matmul, encode, args.reps, device)
    ours = fvu(x, itda.decode(result["code"]))
    start = time.perf_counter()
    reference = fvu(x, leask_matching_pursuit(x, atoms, args.L))  # a Python float: the work has finished
    reference_time = time.perf_counter() - start
    encode_times, matmul_times = timings.candidate_wall, timings.baseline_wall
    encode_cpu, matmul_cpu = timings.candidate_cpu, timings.baseline_cpu
    best_encode, best_matmul = min(encode_times), min(matmul_times)
    print(
        f"shape: batch={args.batch} d={args.d} m={args.m} L={args.L} pursuit={args.pursuit}+refit "
        f"threads={torch.get_num_threads()} device={device}"
    )
    print(f"matmul  min {best_matmul * 1e3:8.1f} ms  all {[round(t * 1e3) for t in matmul_times]}")
    print(f"encode  min {best_encode * 1e3:8.1f} ms  all {[round(t * 1e3) for t in encode_times]}")
    print(
        f"reference (Leask matching pursuit): fvu={reference:.4f} time/matmul="
        f"{reference_time / best_matmul:.1f}x (one run)"
    )
    print(f"ours: fvu={ours:.4f} ({'<=' if ours <= reference else '>'} reference)")
    wall_ratio = best_encode / best_matmul
    # Headline on the CPU: process CPU time (all threads), robust to other tenants of a shared
    # machine. On a GPU the host's CPU time says nothing about the device: the wall clock.
    ratio = timings.ratio(device)
    print(
        f"cpu time: matmul min {min(matmul_cpu) * 1e3:.1f} ms, encode min {min(encode_cpu) * 1e3:.1f} ms; "
        f"wall-clock ratio {wall_ratio:.3f}"
    )
    print(f"ratio_to_matmul={ratio:.3f} fvu={ours:.4f}")
    return ratio, ours


if __name__ == "__main__":
    main()
