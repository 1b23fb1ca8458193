"""The optimisation loop every training stage runs: AdamW, EMA, warm-up + cosine schedule,
wall-clock caps, checkpoints every few minutes and exact resume."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from diffdict.toyworld.training.checkpoints import load_final, load_partial, save_final, save_partial
from diffdict.toyworld.training.config import TrainConfig


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    warmup = min(warmup, max(total // 10, 1))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def steps_within_cap(step: int, total: int, rate: float, seconds_left: float) -> int:
    """The stage's new total: `total`, or fewer so that the steps left at `rate` (steps/s)
    fit in `seconds_left`; never below step + 1 (a stage always ends with a step)."""
    fitted = step + int(rate * max(seconds_left, 0.0))
    return max(min(total, fitted), step + 1)


def train_loop(
    cfg: TrainConfig,
    stage: str,
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[int], torch.Tensor],
    trainable: list[str] | None = None,
) -> dict[str, torch.nn.Module]:
    """Optimise `modules[trainable]` with AdamW on loss_fn(step); returns the EMA copies.

    Checkpoints every `cfg.checkpoint_minutes` to `<stage>.partial.safetensors` and resumes
    from it; the EMA weights are saved as `<stage>.safetensors` at the end.
    """
    trainable = trainable or list(modules)
    train_modules = {name: modules[name] for name in trainable}
    for module in train_modules.values():
        module.train().requires_grad_(True)
    for name, module in modules.items():
        if name not in train_modules:
            module.eval().requires_grad_(False)
    init = cfg.work / f"{stage}.init.safetensors"
    partial = cfg.work / f"{stage}.partial.safetensors"
    if init.exists() and not partial.exists():
        # Warm start (e.g. continuing shipped weights); the schedule starts afresh.
        load_final(init, train_modules, missing_ok=True)
        print(f"[{stage}] warm start from {init}")
    params = [p for m in train_modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr[stage], weight_decay=0.01, betas=(0.9, 0.99))
    ema = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in train_modules.items()}
    step, total, seconds_before = 0, cfg.steps[stage], 0.0
    if partial.exists():
        step, total, seconds_before = load_partial(partial, train_modules, ema, optimizer)
        print(f"[{stage}] resuming at step {step}/{total}")
    cap = cfg.minutes.get(stage)
    bar = tqdm(total=total, initial=step, desc=f"train {stage}", disable=not cfg.progress, mininterval=5)
    started = last_save = time.time()
    timed_steps = 0
    window_start, window_step = started, step  # where the rate used for the cap is measured from

    def seconds_run() -> float:
        return seconds_before + time.time() - started

    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr[stage])
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, module in train_modules.items():
                torch._foreach_lerp_(list(ema[name].parameters()), list(module.parameters()), 1 - decay)
        step += 1
        timed_steps += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        now = time.time()
        if timed_steps == 20:
            window_start, window_step = now, step  # the first steps include CUDA/allocator warm-up
        refit_due = timed_steps == 80 or (timed_steps > 80 and now - window_start > cfg.checkpoint_minutes * 60)
        if cap and refit_due and step < total:
            # Fit the rest of the stage into its wall-clock cap: first from the rate of its first
            # steps, then every few minutes from the recent rate, since rates drift (the from-scratch
            # base slowed from 2.6 to 1.9 steps/s, which a single early fit let overrun 65 min by 10).
            rate = (step - window_step) / max(now - window_start, 1e-9)
            fitted = steps_within_cap(step, total, rate, cap * 60 - seconds_run())
            if fitted < total:
                total = fitted
                bar.total = total
                print(f"[{stage}] {rate:.2f} steps/s: shortened to {total} steps to fit {cap:g} min")
            window_start, window_step = now, step
        if now - last_save > cfg.checkpoint_minutes * 60 and step < total:
            save_partial(partial, train_modules, ema, optimizer, step, total, seconds_run())
            last_save = time.time()
    bar.close()
    elapsed = time.time() - started
    print(
        f"[{stage}] {step} steps in {seconds_run() / 60:.1f} min "
        f"({timed_steps / max(elapsed, 1e-9):.2f} steps/s in this run)"
    )
    # Frozen modules are saved as they are, so a stage's checkpoint holds every part it used.
    final = {name: ema.get(name, module) for name, module in modules.items()}
    save_final(cfg.work / f"{stage}.safetensors", final, {"steps": step, "config": asdict(cfg)})
    partial.unlink(missing_ok=True)
    return final
