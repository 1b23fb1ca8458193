"""Peak memory of training from a store does not grow with the store: 1x vs 4x the maps.

Writes two synthetic stores (same map size, 4x as many maps in the second), then trains a
top-k SAE over every token of each, in a fresh subprocess per store, and reports each
child's peak RSS (ru_maxrss). The stream holds one shuffle window at a time, so the two
peaks should match while the data read differs by 4x.

    python benchmarks/store_memory.py
Last line: peak_rss_ratio=<float>   (peak RSS of the 4x run / peak RSS of the 1x run)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def write_store(root: Path, maps: int, side: int, d: int) -> int:
    from diffdict.dictionaries.store import MapRecord, StoreWriter

    writer = StoreWriter(root, model="synthetic", dtype="fp16", settings={"maps": maps})
    generator = torch.Generator().manual_seed(0)
    per_shard = 32
    for shard in range(0, maps, per_shard):
        records = [
            MapRecord(
                {
                    "hook": "h",
                    "prompt_id": i,
                    "prompt": f"p{i}",
                    "seed": 0,
                    "step": 0,
                    "timestep": 1.0,
                    "t": 1.0,
                    "branch": "cond",
                },
                torch.randn(side, side, d, generator=generator),
            )
            for i in range(shard, min(shard + per_shard, maps))
        ]
        writer.write_shard(f"shard-{shard:06d}", records)
    writer.finalize()
    return sum(p.stat().st_size for p in (root / "shards").iterdir())


def child(root: str, batch: int, buffer_tokens: int, n: int, k: int) -> None:
    """Train over every token of the store once; print peak RSS in MiB as JSON."""
    torch.set_num_threads(2)
    from diffdict.dictionaries.store_reader import ActivationStore
    from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig

    store = ActivationStore(root)
    sae = TopKSAE(TopKSAEConfig(d=store.d("h"), n=n, k=k))
    steps = 0
    for x in store.stream("h", batch_size=batch, buffer_tokens=buffer_tokens, seed=0, epochs=1):
        sae.partial_fit(x)
        steps += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"steps": steps, "tokens": steps * batch, "peak_rss_mib": peak}))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=256, help="maps in the small store (the large has 4x)")
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument("--d", type=int, default=320)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--buffer-tokens", type=int, default=16384)
    parser.add_argument("--n", type=int, default=1280)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.batch, args.buffer_tokens, args.n, args.k)
        return 0.0
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, maps in (("1x", args.maps), ("4x", 4 * args.maps)):
            root = Path(folder) / label
            size = write_store(root, maps, args.side, args.d)
            command = [
                sys.executable,
                __file__,
                "--child",
                str(root),
                "--batch",
                str(args.batch),
                "--buffer-tokens",
                str(args.buffer_tokens),
                "--n",
                str(args.n),
                "--k",
                str(args.k),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[label] = dict(json.loads(output.strip().splitlines()[-1]), store_mib=size / 2**20)
            r = results[label]
            print(
                f"{label}: store {r['store_mib']:.1f} MiB, trained {r['tokens']} tokens in {r['steps']} steps, "
                f"peak RSS {r['peak_rss_mib']:.1f} MiB"
            )
    ratio = results["4x"]["peak_rss_mib"] / results["1x"]["peak_rss_mib"]
    print(
        f"store size ratio {results['4x']['store_mib'] / results['1x']['store_mib']:.2f}, "
        f"tokens ratio {results['4x']['tokens'] / results['1x']['tokens']:.2f}"
    )
    print(f"peak_rss_ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
