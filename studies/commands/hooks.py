"""`diffdict hooks MODEL`: list a model's hook points (name, module path, d, grid)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hooks",
        help="list a model's hook points",
        description="List every hook point of a model: short name, module path, channels d and the "
        "spatial grid at the model's default resolution (or --height/--width). Real models are built "
        "on the meta device from their configs: nothing is downloaded.",
    )
    parser.add_argument("model", help="model id: a hub id, a local diffusers folder, tiny/sdxl, tiny/flux or toy/*")
    parser.add_argument("--height", type=int, default=None, help="image height in px (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="image width in px (default: the model's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffdict import adapters

    adapter = adapters.load(args.model, device="meta")
    height = args.height or adapter.defaults.height
    width = args.width or adapter.defaults.width
    rows = []
    for hook in adapter.hook_points.values():
        h, w = hook.grid(height, width)  # raises before anything is printed if the size does not fit
        grid = f"{h}x{w}" if hook.stream == "image" else f"{w} text tokens"
        rows.append(f"{hook.name:16s} {hook.module_path:36s} {hook.d:6d}  {grid}")
    print(f"{adapter.model_id}: {len(adapter.hook_points)} hook points, grid at {height}x{width} px")
    print(f"{'name':16s} {'module path':36s} {'d':>6s}  grid")
    print("\n".join(rows))
    return 0
