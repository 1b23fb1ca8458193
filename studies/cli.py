"""The `diffdict` command line: one sub-command per module in studies/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from diffdict.studies.errors import UserError, user_message  # noqa: F401  (UserError: importable from here too)

# Each module defines `register(subparsers)` which adds its parser and sets `func`.
# Kept as names so that `diffdict --help` does not import torch/diffusers for every command.
COMMAND_MODULES = [
    "diffdict.studies.commands.hooks",
    "diffdict.studies.commands.generate",
    "diffdict.studies.commands.toy",
    "diffdict.studies.commands.study",
    "diffdict.studies.commands.push",
    "diffdict.studies.commands.atlas",
    "diffdict.studies.commands.findings",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffdict",
        description="Dictionary learning on the denoisers of text-to-image diffusion models "
        "(SDXL Turbo, SDXL Base, Flux): capture, fit, intervene, compare.",
        epilog="Set DIFFDICT_DEBUG=1 to see the full traceback of an error.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before any command imports diffusers: see adapters/__init__.py (bitsandbytes' kernel warning).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except Exception as error:
        # One error path: the project's own errors (user_facing), file-system and encoding errors
        # become one message and exit 2; anything else is a bug and keeps its traceback (exit 1).
        message = user_message(error)
        if message is None or os.environ.get("DIFFDICT_DEBUG"):
            raise  # DIFFDICT_DEBUG=1 shows the full traceback
        print(f"diffdict {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
