"""`diffdict toy {train,eval,scenes}`: the ground-truth toy world and its toy models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffdict.studies.errors import UserError
from diffdict.studies.threads import add_threads_option, apply_threads
from diffdict.toyworld.training.config import STAGES as TRAIN_STAGES  # torch-free, so `--help` stays fast


def _stage_values(pairs: list[str] | None, cast, flag: str) -> dict:
    """['base=2000', 'flux=10'] -> {'base': 2000, 'flux': 10}."""
    out = {}
    for pair in pairs or []:
        stage, sep, value = pair.partition("=")
        if not sep or stage not in TRAIN_STAGES[:-1]:
            raise UserError(f"{flag} expects STAGE=VALUE with STAGE in {', '.join(TRAIN_STAGES[:-1])}, got {pair!r}")
        try:
            out[stage] = cast(value)
        except ValueError:
            raise UserError(f"{flag} {pair!r}: {value!r} is not a number") from None
    return out


def register(subparsers) -> None:
    parser = subparsers.add_parser("toy", help="the toy world: train, evaluate and inspect the toy models")
    toy = parser.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    toy.required = True

    train = toy.add_parser("train", help="train toy/sdxl-base, toy/sdxl-turbo and toy/flux from scratch")
    train.add_argument(
        "--preset",
        choices=("gpu", "cpu"),
        default="cpu",
        help="'cpu': per-stage time caps that fit 4 h on 2 cores; 'gpu': longer step counts for CUDA",
    )
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument(
        "--seed", type=int, default=0, help="seeds the training scenes, initial weights and noise (default 0)"
    )
    train.add_argument("--work-dir", default="runs/toy_train", help="checkpoints; rerun to resume")
    train.add_argument("--out-dir", default="toyworld/weights", help="where the pipeline folders go")
    train.add_argument(
        "--stages",
        default=",".join(TRAIN_STAGES),
        help=f"comma-separated subset of {','.join(TRAIN_STAGES)} (default: all; text is skipped "
        "with --text-pretrain none); finished stages are skipped on a rerun",
    )
    train.add_argument("--steps", nargs="*", metavar="STAGE=N", help="override step counts")
    train.add_argument("--batch", nargs="*", metavar="STAGE=N", help="override batch sizes")
    train.add_argument("--minutes", nargs="*", metavar="STAGE=M", help="wall-clock cap per stage")
    train.add_argument("--n-scenes", type=int, help="training scenes to render")
    train.add_argument("--lr", nargs="*", metavar="STAGE=X", help="override peak learning rates")
    train.add_argument("--offset-noise", type=float, help="base: offset-noise std (default 0.1)")
    train.add_argument(
        "--object-loss-weight",
        type=float,
        help="base, turbo and flux: extra loss weight on the latent cells (Flux: image tokens) an object "
        "covers (default 4; 0: plain mean)",
    )
    train.add_argument(
        "--text-pretrain",
        nargs="?",
        const="sdxl,flux",
        metavar="FAMILIES",
        help="families (sdxl, flux; 'none') whose denoiser starts from the text stage's encoders, "
        "frozen; the others train fresh encoders with the denoiser (default: flux, as shipped; "
        "the bare flag: both)",
    )
    train.add_argument("--threads", type=int, help="torch CPU threads (e.g. 1 per stage when two run at once)")
    train.add_argument(
        "--teacher-samples",
        type=int,
        help="turbo and flux_distill: teacher samples to regress on (cpu preset 2048, gpu 16384; "
        "0: turbo regresses on training images, flux_distill cannot run)",
    )
    train.add_argument(
        "--turbo-distill-weight", type=float, help="turbo: weight of ADD's re-noised teacher term (default 0: off)"
    )
    train.add_argument("--base-guidance", type=float, help="CFG scale of the base (teacher and default)")
    train.add_argument("--flux-steps", type=int, help="default sampling steps of toy/flux")
    train.add_argument(
        "--flux-teacher-guidance", type=float, help="flux_distill: true-CFG scale of the teacher's samples (default 3)"
    )
    train.add_argument(
        "--flux-teacher-steps", type=int, help="flux_distill: Euler steps of the teacher's samples (default 8)"
    )
    train.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars (for log files)")
    train.add_argument(
        "--force",
        action="store_true",
        help="let the export stage replace pipeline folders that already exist in --out-dir "
        "(sdxl-base, sdxl-turbo, flux; the default --out-dir holds the shipped ones)",
    )
    train.set_defaults(func=run_train)

    imports = toy.add_parser(
        "import-weights",
        help="write a training work dir from shipped pipeline folders (to continue training them)",
        description="Training checkpoints do not outlive a machine; the shipped folders do. This writes each "
        "stage's checkpoint from them as if it had just finished; stages named by --continue are "
        "written as <stage>.init.safetensors, so the next `toy train --stages STAGE` warm-starts "
        "from them.",
    )
    imports.add_argument(
        "--weights", type=Path, default=Path("toyworld/weights"), help="folder holding sdxl-base, sdxl-turbo and flux"
    )
    imports.add_argument("--work-dir", type=Path, required=True, help="an empty (or new) work dir")
    imports.add_argument(
        "--continue",
        dest="continue_stages",
        default="",
        help=f"comma-separated stages to continue training ({', '.join(TRAIN_STAGES[:-1])})",
    )
    imports.set_defaults(func=run_import)

    evaluate = toy.add_parser("eval", help="adherence per attribute on the held-out captions")
    evaluate.add_argument(
        "models", nargs="+", metavar="MODEL", help="toy/sdxl-base, toy/sdxl-turbo, toy/flux or a folder"
    )
    evaluate.add_argument("--n", type=int, default=256, help="held-out captions (seeds 0..n-1)")
    evaluate.add_argument("--batch", type=int, default=64, help="images generated per pipeline call (default 64)")
    evaluate.add_argument("--steps", type=int, help="override the model's default steps")
    evaluate.add_argument("--guidance", type=float, help="override the model's default guidance")
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(evaluate)
    evaluate.add_argument("--save-images", type=Path, help="folder for a PNG grid per model")
    evaluate.add_argument(
        "--errors",
        action="store_true",
        help="also break colour, shape and size errors down by scene kind and object size into "
        "swapped (the other object's value: a binding error), wrong and missing",
    )
    evaluate.add_argument("--json", type=Path, help="also write the table (and the breakdown) as JSON here")
    evaluate.set_defaults(func=run_eval)

    scenes = toy.add_parser("scenes", help="render ground-truth scenes with captions and labels")
    scenes.add_argument("--n", type=int, default=8, help="scenes to write (default 8)")
    scenes.add_argument(
        "--stream",
        choices=("train", "eval"),
        default="eval",
        help="eval: the held-out captions (seeds 0..n-1); train: the training stream",
    )
    scenes.add_argument("--out", type=Path, required=True, help="folder for PNGs and labels.jsonl")
    scenes.set_defaults(func=run_scenes)


def _families(value: str) -> tuple[str, ...]:
    """'--text-pretrain' value: comma-separated families, or 'none'."""
    families = tuple(f.strip() for f in value.split(",") if f.strip() and f.strip() != "none")
    unknown = [f for f in families if f not in ("sdxl", "flux")]
    if unknown:
        raise UserError(
            f"--text-pretrain: unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
            "give sdxl, flux, sdxl,flux or none"
        )
    return families


def run_train(args: argparse.Namespace) -> int:
    from diffdict.toyworld.training.config import PRESETS, TrainConfig
    from diffdict.toyworld.training.run import train

    cfg = TrainConfig(
        seed=args.seed,
        device=args.device,
        work_dir=args.work_dir,
        out_dir=args.out_dir,
        progress=not args.no_progress,
        replace_export=args.force,
    )
    for key, value in PRESETS[args.preset].items():
        setattr(cfg, key, dict(value) if isinstance(value, dict) else value)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in TRAIN_STAGES]
    if unknown:
        raise UserError(f"--stages: unknown stage(s) {unknown}; choose from {', '.join(TRAIN_STAGES)}")
    cfg.stages = stages
    cfg.steps = cfg.steps | _stage_values(args.steps, int, "--steps")
    cfg.batch = cfg.batch | _stage_values(args.batch, int, "--batch")
    cfg.minutes = cfg.minutes | _stage_values(args.minutes, float, "--minutes")
    cfg.lr = cfg.lr | _stage_values(args.lr, float, "--lr")
    for name in (
        "n_scenes",
        "offset_noise",
        "object_loss_weight",
        "threads",
        "base_guidance",
        "flux_steps",
        "teacher_samples",
        "turbo_distill_weight",
        "flux_teacher_guidance",
        "flux_teacher_steps",
    ):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.text_pretrain is not None:
        cfg.text_pretrain = _families(args.text_pretrain)
    if cfg.n_scenes < 1 or (cfg.threads is not None and cfg.threads < 1):
        raise UserError("--n-scenes and --threads must be positive")
    for flag, value in (
        ("--offset-noise", cfg.offset_noise),
        ("--object-loss-weight", cfg.object_loss_weight),
        ("--teacher-samples", cfg.teacher_samples),
        ("--turbo-distill-weight", cfg.turbo_distill_weight),
    ):
        if value < 0:
            raise UserError(f"{flag} must be >= 0, got {value}")
    train(cfg)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from diffdict.toyworld.training.warm_start import import_weights

    stages = tuple(s.strip() for s in args.continue_stages.split(",") if s.strip())
    for path in import_weights(args.weights, args.work_dir, stages):
        print(f"wrote {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from diffdict.studies.validate import check_device
    from diffdict.toyworld.errors import format_breakdown
    from diffdict.toyworld.eval import evaluate, format_table

    check_device(args.device, "--device")  # before a model loads
    apply_threads(args.threads)
    rows, times, errors = {}, {}, {}
    for model in args.models:
        result = evaluate(
            model, n=args.n, batch=args.batch, steps=args.steps, guidance=args.guidance, device=args.device
        )
        name = model if model.startswith("toy/") or "/" in model else f"toy/{model}"
        rows[name], times[name], errors[name] = result["adherence"], result["seconds_per_batch"], result["errors"]
        if args.save_images:
            _save_grid(result["images"][:64], args.save_images / f"{name.replace('/', '_')}.png")
    print(format_table(rows))
    for name, seconds in times.items():
        print(f"{name}: {seconds:.2f} s per batch of {args.batch}")
    if args.errors:
        for name, table in errors.items():
            print(f"\n{name}: objects by outcome (swapped: took the other object's value)\n{format_breakdown(table)}")
    if args.json:
        report = {"adherence": rows, "seconds_per_batch": times}
        if args.errors:
            report["errors"] = errors  # Counters are dicts to json
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _save_grid(images, path: Path, columns: int = 8) -> None:
    import numpy as np
    from PIL import Image

    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        grid[(i // columns) * h : (i // columns + 1) * h, (i % columns) * w : (i % columns + 1) * w] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def run_scenes(args: argparse.Namespace) -> int:
    from PIL import Image

    from diffdict.toyworld.render import render
    from diffdict.toyworld.scenes import eval_scenes, sample_scene

    if args.n < 1:
        raise UserError("--n must be at least 1")
    scenes = eval_scenes(args.n) if args.stream == "eval" else [sample_scene(i) for i in range(args.n)]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "labels.jsonl", "w") as handle:
        for scene in scenes:
            Image.fromarray(render(scene).image).save(args.out / f"scene_{scene.seed:05d}.png")
            handle.write(json.dumps({"seed": scene.seed, **scene.labels()}) + "\n")
    print(f"wrote {len(scenes)} scenes to {args.out}")
    return 0
