"""`diffdict generate MODEL PROMPT...`: generate with capture and print what was captured."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffdict.studies.threads import add_threads_option, apply_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images, capture hook points, print a summary",
        description="Generate one image per prompt with the model's protocol defaults, capture the "
        "given hook points, print one line per captured map and save the images.",
    )
    parser.add_argument("model", help="model id (see `diffdict hooks`)")
    parser.add_argument("prompts", nargs="+", help="one or more prompts")
    parser.add_argument("--hooks", default=None, help="comma-separated hook points (default: every image hook)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i (default 0)"
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument(
        "--capture",
        choices=("update", "output"),
        default="update",
        help="update = block output - input (default); output = the stream itself",
    )
    parser.add_argument("--quantize", choices=("nf4",), default=None, help="NF4 weights (Flux only)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    add_threads_option(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/generate"), help="folder for the PNGs (default runs/generate)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from diffdict import adapters
    from diffdict.studies.errors import UserError
    from diffdict.studies.validate import check_device

    # Numbers that reach generation, checked before the model loads (NaN guidance would turn CFG off silently).
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise UserError(f"--guidance must be a finite number >= 0 (0 turns guidance off), got {args.guidance}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UserError(
            f"--steps must be >= 1, got {args.steps}"
            if args.steps < 1
            else f"--steps must be at most 1000, got {args.steps}"
        )
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be from 0 to 2**63 - 1, got {args.seed}")
    last = args.seed + len(args.prompts) - 1  # prompt i uses seed + i: the last one must be a valid seed too
    if last >= 2**63:
        raise UserError(
            f"--seed {args.seed} is too large for {len(args.prompts)} prompts: prompt i uses seed + i, "
            f"and {last} is beyond 2**63 - 1; use a seed of at most {2**63 - len(args.prompts)}"
        )
    check_device(args.device, "--device")
    apply_threads(args.threads)
    if args.out.exists() and not args.out.is_dir():  # refused now, not after the images are generated
        raise UserError(f"--out {args.out} is a file, not a folder; give a folder for the PNGs (default runs/generate)")
    adapter = adapters.load(args.model, device=args.device, quantize=args.quantize)
    if args.hooks:
        hooks = [h.strip() for h in args.hooks.split(",") if h.strip()]
    else:
        hooks = [h.name for h in adapter.hook_points.values() if h.stream == "image"]
    for name in hooks:
        adapter.hook_point(name)
    gen = adapter.generate(
        args.prompts, seeds=args.seed, hooks=hooks, capture=args.capture, steps=args.steps, guidance=args.guidance
    )
    print(f"{adapter.model_id}: {len(gen.images)} image(s), {len(gen.captures)} captured maps ({args.capture})")
    print(f"{'hook':14s} {'step':>4s} {'timestep':>9s} {'t':>6s} {'branch':7s} shape (batch, h, w, d)   mean |x|")
    for m in gen.captures:
        print(
            f"{m.hook:14s} {m.step:4d} {m.timestep:9.1f} {m.t:6.3f} {m.branch:7s} "
            f"{str(tuple(m.value.shape)):24s} {m.value.abs().mean().item():.4f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(gen.images):
        image.save(args.out / f"{i:03d}_seed{gen.seeds[i]}.png")
    print(f"images written to {args.out}/")
    return 0
