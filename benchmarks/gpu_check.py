"""The GPU check: the paper-scale numbers a lent GPU can measure in one call, as one JSON.

  - the top-k SAE step and ITDA coding at the papers' shapes, each against one dense matmul of the
    same shape on the same device (benchmarks/sae_step.py, benchmarks/itda_encode.py);
  - the real-width SDXL U-Net (random weights, with its real text encoders and VAE) at 512 px, one
    step: captured shapes at the four paper hooks checked against the hook table, images/s with and
    without capture (benchmarks/real_scale.py builds it);
  - stream training (dictionaries/stream.py) of a paper-size SAE for a few thousand steps from
    synthetic maps: tokens/s of window assembly, shuffling and training together.
Runs with torch, transformers, safetensors and diffusers only (no polars). `--quick` runs a reduced
version on the CPU in a minute or two (the test suite does). See docs/scale.md for the device call.

    python benchmarks/gpu_check.py --device cuda --json gpu_check.json
    python benchmarks/gpu_check.py --quick --json /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks, also when imported by a test

import itda_encode  # noqa: E402
import real_scale  # noqa: E402
import sae_step  # noqa: E402

PAPER_HOOKS = ["down.2.1", "mid.0", "up.0.0", "up.0.1"]


def _quietly(function, *args):
    """Run a benchmark's main, keeping its printout out of this script's (returned in the JSON)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = function(*args)
    return result, out.getvalue().strip().splitlines()[-3:]


def sae_and_itda(device: str, quick: bool) -> dict:
    """Step/matmul ratios at the papers' shapes (quick: small shapes)."""
    shapes = (
        [
            (
                "64x1024 k4",
                ["--d", "64", "--n", "1024", "--k", "4", "--batch", "256", "--k-aux", "16", "--dead-fraction", "0.1"],
            )
        ]
        if quick
        else [
            ("1280x5120 k10", ["--d", "1280", "--n", "5120", "--k", "10", "--batch", "4096"]),
            ("3072x65536 k64", ["--d", "3072", "--n", "65536", "--k", "64", "--batch", "4096"]),
        ]
    )
    result = {}
    for name, argv in shapes:
        ratio, tail = _quietly(sae_step.main, [*argv, "--device", device, "--reps", "3" if quick else "5"])
        result[f"sae_step_{name}"] = {"ratio_to_matmul": ratio, "printed": tail}
    itda = (
        ["--d", "64", "--m", "256", "--L", "4", "--batch", "128"]
        if quick
        else ["--d", "1280", "--m", "8192", "--L", "32", "--batch", "2048"]
    )
    (ratio, fvu), tail = _quietly(itda_encode.main, [*itda, "--device", device, "--reps", "3"])
    result["itda_encode"] = {"ratio_to_matmul": ratio, "fvu": fvu, "printed": tail}
    return result


def sdxl_step(device: str, quick: bool) -> dict:
    """Build the real-width SDXL pipeline, check captured shapes, time images/s with and without capture."""
    from diffdict import adapters
    from diffdict.adapters.capture import Generation

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    counts: dict = {}
    began = time.perf_counter()
    if quick:  # the tiny random SDXL (the same blocks at d = 32): the path, not the size
        adapter = adapters.load("tiny/sdxl", device=device)
        counts["unet"] = real_scale.params(adapter.denoiser)
    else:
        with torch.device(device):  # build the weights where they run: no host copy of 2.6B parameters
            pipe = real_scale.build_sdxl(reduced=False, counts=counts)
        pipe.to(device, dtype)
        adapter = real_scale.wrap("sdxl", real_scale.SDXL_ID, pipe)
    built = time.perf_counter() - began
    size = 64 if quick else 512
    batch = 2 if quick else 8
    prompts = [real_scale.PROMPT] * batch

    def images_per_second(hooks: list[str]) -> tuple[float, Generation]:
        generation = adapter.generate(prompts, seeds=0, hooks=hooks, steps=1, guidance=0.0, height=size, width=size)
        _sync(device)
        start = time.perf_counter()
        generation = adapter.generate(prompts, seeds=0, hooks=hooks, steps=1, guidance=0.0, height=size, width=size)
        _sync(device)
        return batch / (time.perf_counter() - start), generation

    plain, _ = images_per_second([])
    captured, generation = images_per_second(PAPER_HOOKS)
    shapes = {}
    for hook in PAPER_HOOKS:  # every captured map has the shape the hook table gives (`diffdict hooks`)
        point = adapter.hook_point(hook)
        (one_map,) = generation.maps(hook=hook)
        expected = (batch, *point.grid(size, size), point.d)
        if tuple(one_map.value.shape) != expected:
            raise AssertionError(f"{hook}: captured {tuple(one_map.value.shape)}, hook table {expected}")
        shapes[hook] = list(one_map.value.shape)
    if not quick:  # and the table is the real model's, as `diffdict hooks stabilityai/sdxl-turbo` prints it
        real_scale.check_maps(adapter, adapters_first(generation), PAPER_HOOKS, size)
    return {
        "build_seconds": round(built, 1),
        "parameters": counts,
        "size_px": size,
        "batch": batch,
        "images_per_s_without_hooks": plain,
        "images_per_s_with_capture": captured,
        "capture_overhead": plain / captured,
        "shapes": shapes,
        "dtype": str(dtype),
    }


def adapters_first(generation):
    """A Generation of the first image only (check_maps expects batch 1)."""
    from diffdict.adapters.capture import CapturedMap, Generation

    firsts = [CapturedMap(m.hook, m.step, m.timestep, m.t, m.branch, m.value[:1]) for m in generation.captures]
    return Generation(generation.images[:1], generation.prompts[:1], generation.seeds[:1], firsts)


def stream_training(device: str, quick: bool) -> dict:
    """Stream-train a paper-size SAE from synthetic maps (a pool of random 16x16 maps, cycled)."""
    from diffdict.dictionaries.jobs import MapRecord, plan_prompt_jobs
    from diffdict.dictionaries.stream import StreamedDictionary, StreamSettings, StreamSource, train_stream
    from diffdict.dictionaries.train_common import DictionarySpec

    d, n, k, batch, steps = (64, 256, 4, 256, 40) if quick else (1280, 5120, 10, 4096, 3000)
    side, per_job = 16, 8
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(64, side, side, d, generator=generator) * torch.linspace(0.2, 2.0, d)

    def generate(job):
        return [
            MapRecord(
                {
                    "hook": "down.2.1",
                    "prompt_id": p,
                    "prompt": "",
                    "seed": job.seed,
                    "step": 0,
                    "timestep": 999.0,
                    "t": 1.0,
                    "branch": "cond",
                },
                pool[p % pool.shape[0]],
            )
            for p in job.prompt_ids
        ]

    jobs = plan_prompt_jobs(list(range(100_000)), [0], per_job)
    source = StreamSource(jobs, generate, {"down.2.1": d}, window_jobs=max(1, 262_144 // (side * side * per_job)))
    spec = DictionarySpec("sae", "topk_sae", "down.2.1", {"n": n, "k": k, "k_aux": min(256, n // 4)}, branch="cond")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trained, rows = train_stream(
            source,
            [StreamedDictionary(spec, steps * batch, batch)],
            StreamSettings(checkpoint_every=10**9, init_tokens=batch),
            out,
            progress=False,
            device=device,
        )
        _sync(device)
        seconds = time.perf_counter() - start
    return {
        "d": d,
        "n": n,
        "k": k,
        "batch": batch,
        "steps": steps,
        "seconds": round(seconds, 1),
        "tokens_per_s": steps * batch / seconds,
        "last_fvu": rows[-1].get("fvu") if rows else None,
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes on any device (the test)")
    parser.add_argument("--json", default=None, help="write the numbers here")
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        choices=("kernels", "sdxl", "stream"),
        help="run only these parts (repeatable)",
    )
    args = parser.parse_args(argv)
    parts = {"kernels": sae_and_itda, "sdxl": sdxl_step, "stream": stream_training}
    report: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine(),
        "torch": torch.__version__,
        "quick": args.quick,
    }
    for name, part in parts.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            report[name] = part(args.device, args.quick)
        except Exception as error:  # one part failing still reports the others
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        report[name]["wall_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {json.dumps(report[name], default=str)[:400]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
