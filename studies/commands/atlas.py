"""`diffdict atlas RUN_DIR --dictionary NAME --features 12,40`: feature cards on demand."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffdict.studies.threads import add_threads_option, apply_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "atlas",
        help="render feature-atlas cards for chosen features of a trained dictionary",
        description="Render one card per chosen feature of a dictionary of a finished run: its label and "
        "frequency, its top-activating held-out images with heatmaps, what it draws from the empty prompt, "
        "and a modulation strip; written as one self-contained HTML file. The run's config is found in "
        "the run folder (RUN_DIR/config.toml, the copy every `diffdict run`/`study`/`report` stores, with "
        "relative paths resolved against the original config's folder recorded in RUN_DIR/run.json); "
        "--config names it instead (e.g. for runs made before runs stored their config).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/quickstart")
    parser.add_argument("--dictionary", required=True, help="a dictionary name of the run's config")
    parser.add_argument("--features", required=True, help="comma-separated feature indices, e.g. 12,40")
    parser.add_argument("--config", default=None, help="the run's config (default: RUN_DIR/config.toml)")
    parser.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/atlas_NAME_FEATURES.html)")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="top-activating images per feature (default: the config's atlas setting, else 6)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the config's, else cuda if available)")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def parse_features(text: str) -> list[int]:
    from diffdict.studies.cli import UserError

    try:
        features = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"--features {text!r}: give comma-separated feature indices, e.g. 12,40") from None
    if not features:
        raise UserError("--features is empty: give comma-separated feature indices, e.g. 12,40")
    negative = [f for f in features if f < 0]
    if negative:  # refused before the run loads; the upper bound (n - 1) needs the dictionary
        raise UserError(f"--features {negative}: feature indices are 0 or more (0 .. n - 1 of the dictionary)")
    return list(dict.fromkeys(features))


def check_images(images: int | None) -> None:
    """--images counts top-activating images per card: 0 or fewer would render cards without images."""
    from diffdict.studies.cli import UserError

    if images is not None and images < 1:
        raise UserError(
            f"--images must be at least 1 (top-activating images per feature), got {images}; "
            f"leave it out for the config's atlas setting (else 6)"
        )


def run(args: argparse.Namespace) -> int:
    from diffdict.studies.cli import UserError
    from diffdict.studies.run import load_run_dir
    from diffdict.studies.validate import check_device

    features = parse_features(args.features)
    check_images(args.images)
    apply_threads(args.threads)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run folder")
    run = load_run_dir(run_dir, args.config, device=args.device, progress=False)
    check_device(args.device, "--device") if args.device else check_device(run.config.device, "device")
    from diffdict.studies.lock import run_lock

    with run_lock(run_dir, command=f"diffdict atlas {run_dir}"):  # it writes atlas/ into the run folder
        return _render(args, run, run_dir, features)


def _render(args: argparse.Namespace, run, run_dir: Path, features: list[int]) -> int:
    """The cards of `features`, under the run's lock."""
    from diffdict.analysis.report import render_cards_page, write_page
    from diffdict.studies.atlas import atlas_cards, atlas_for, atlas_settings, feature_stats
    from diffdict.studies.cli import UserError

    names = [d.name for d in run.config.dictionaries]
    if args.dictionary not in names:
        raise UserError(
            f"--dictionary {args.dictionary!r} is not in the run's config; dictionaries: {', '.join(names)}"
        )
    n = int(run.dictionary(args.dictionary).atoms.shape[0])
    bad = [f for f in features if not 0 <= f < n]
    if bad:
        raise UserError(f"--features {bad} outside {args.dictionary}'s 0..{n - 1}")
    prompts, strengths, empty = atlas_settings(run)
    study = run.config.studies.atlas
    images = args.images if args.images is not None else (study.images_per_feature if study else 6)
    stats = feature_stats(run, args.dictionary, prompts)
    tag = "_".join(map(str, features))
    rows, tiles = atlas_for(
        run,
        args.dictionary,
        stats,
        features,
        images,
        strengths,
        empty,
        folder=run.root / "atlas" / "on_demand" / args.dictionary,
    )
    import polars as pl

    cards = atlas_cards(
        {
            "atlas": pl.DataFrame(rows, infer_schema_length=None),
            "atlas_tiles": pl.DataFrame(tiles, infer_schema_length=None),
        }
    )
    out = Path(args.out) if args.out else run_dir / f"atlas_{args.dictionary}_{tag}.html"
    note = (
        f"Run {run_dir}, dictionary {args.dictionary}, features {', '.join(map(str, features))}; "
        f"{len(stats.data.prompts)} held-out prompts; strengths are multiples of each feature's mean activation."
    )
    write_page(out, render_cards_page(f"diffdict atlas: {args.dictionary}", cards, note))
    print(f"atlas: {out}")
    return 0
