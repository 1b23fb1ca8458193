"""`diffdict push RUN_DIR/fits/GROUP/NAME owner/repo`: share a trained dictionary on the Hugging Face Hub."""

from __future__ import annotations

import argparse

from diffdict.studies.errors import MissingFileError, UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a trained dictionary to the Hugging Face Hub, with a model card",
        description="Upload a trained dictionary (config.json, weights.safetensors; never the optimiser "
        "state) to a Hugging Face Hub model repo, with a README.md model card: architecture, model, hook, "
        "d, n, k, training tokens, held-out FVU, L0 and dead fraction, and the dictionary's config. The repo "
        "is created if needed; log in first (`hf auth login`) or set HF_TOKEN. Before anything is staged or "
        "sent, the token and the Hub's reachability are checked (offline mode, no token, no network or a refused "
        "token: exit 2 with what to do). Load it back with dictionaries.load('owner/repo', subfolder=...).",
    )
    parser.add_argument("dictionary", help="a trained dictionary's folder, e.g. runs/quickstart/fits/GROUP/NAME")
    parser.add_argument("repo", help="the Hub model repo, owner/name")
    parser.add_argument(
        "--subfolder",
        default=None,
        help="put it in this folder of the repo (several dictionaries "
        "per repo; a relative path, no '..'); default: the repo root",
    )
    parser.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    parser.add_argument("--message", default=None, help="the commit message")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, upload=None) -> int:
    from pathlib import Path

    from diffdict.dictionaries.hub import is_hub_id, push

    if not Path(args.dictionary).is_dir():
        raise MissingFileError(
            f"{args.dictionary} is not a folder; give a trained dictionary's folder "
            f"(RUN_DIR/fits/GROUP/NAME, written by `diffdict train`)"
        )
    if not is_hub_id(args.repo):
        raise UserError(f"{args.repo!r} is not a Hub repo id; expected owner/name")
    # push() checks the subfolder, loads the dictionary and then (with the real upload) the token and the
    # network, all before anything is staged or sent.
    result = push(
        args.dictionary,
        args.repo,
        subfolder=args.subfolder,
        private=args.private,
        commit_message=args.message,
        upload=upload,
    )
    where = f"{args.repo}/{args.subfolder}" if args.subfolder else args.repo
    print(f"pushed {args.dictionary} to {where}: {result}")
    return 0
