"""toyworld.training.loop.train_loop on a tiny module: wall-clock caps that hold when the step rate
drifts, and checkpoints that carry step, schedule and time spent across a resume."""

import time

import pytest
import torch

from diffdict.toyworld.training.checkpoints import load_partial
from diffdict.toyworld.training.config import TrainConfig
from diffdict.toyworld.training.loop import steps_within_cap, train_loop

STAGE = "base"


def config(tmp_path, steps: int, cap_minutes: float | None, checkpoint_minutes: float) -> TrainConfig:
    return TrainConfig(
        work_dir=str(tmp_path),
        progress=False,
        steps={STAGE: steps},
        minutes={STAGE: cap_minutes} if cap_minutes else {},
        checkpoint_minutes=checkpoint_minutes,
    )


def regression_loss(module: torch.nn.Module, step_seconds):
    """A loss on a fixed batch that takes step_seconds(step) of wall time per step."""
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.ones(16, 1)

    def loss(step: int) -> torch.Tensor:
        time.sleep(step_seconds(step))
        return ((module(x) - y) ** 2).mean()

    return loss


def test_steps_within_cap_only_ever_shortens():
    assert steps_within_cap(step=100, total=1000, rate=2.0, seconds_left=100) == 300
    assert steps_within_cap(step=100, total=1000, rate=2.0, seconds_left=10_000) == 1000
    assert steps_within_cap(step=100, total=1000, rate=2.0, seconds_left=-5) == 101


def test_a_stage_that_slows_down_still_ends_within_its_cap(tmp_path, capsys):
    # At most 200 steps/s while the first fit is made, then at most 40: fitted once from the
    # fast start, the stage would run for several times its 3 s cap; refitted every 0.3 s from
    # the recent rate, it can do at most ~200 steps in 3 s (100 fast ones, then 40/s).
    net = torch.nn.Linear(4, 1)
    cfg = config(tmp_path, steps=100_000, cap_minutes=0.05, checkpoint_minutes=0.005)
    train_loop(cfg, STAGE, {"net": net}, regression_loss(net, lambda step: 0.005 if step < 100 else 0.025))
    printed = capsys.readouterr().out.splitlines()
    fits = [int(line.split("shortened to ")[1].split()[0]) for line in printed if "shortened to" in line]
    done = int(next(line for line in printed if " steps in " in line).split()[1])
    assert len(fits) >= 2 and fits[-1] < fits[0]  # refitted at the slower rate
    assert done == fits[-1] <= 230


def test_a_resumed_stage_continues_its_step_and_counts_the_time_already_spent(tmp_path, capsys):
    net = torch.nn.Linear(4, 1)
    cfg = config(tmp_path, steps=1000, cap_minutes=None, checkpoint_minutes=0)  # a checkpoint every step
    stop_at = 30
    loss = regression_loss(net, lambda _: 0.01)

    def interrupted(step: int) -> torch.Tensor:
        if step == stop_at:
            raise KeyboardInterrupt  # as a killed run
        return loss(step)

    with pytest.raises(KeyboardInterrupt):
        train_loop(cfg, STAGE, {"net": net}, interrupted)
    partial = tmp_path / f"{STAGE}.partial.safetensors"
    step, total, seconds = load_partial(
        partial,
        {"net": torch.nn.Linear(4, 1)},
        {"net": torch.nn.Linear(4, 1)},
        torch.optim.AdamW(torch.nn.Linear(4, 1).parameters()),
    )
    assert (step, total) == (stop_at, 1000) and 0.2 < seconds < 5  # saved after every finished step

    # Resumed under a cap that the time already spent nearly uses up: it stops at its first fit.
    fresh = torch.nn.Linear(4, 1)
    fresh_loss, steps_run = regression_loss(fresh, lambda _: 0.01), []
    resumed_cfg = config(tmp_path, steps=1000, cap_minutes=(seconds + 0.1) / 60, checkpoint_minutes=5)
    train_loop(resumed_cfg, STAGE, {"net": fresh}, lambda step: steps_run.append(step) or fresh_loss(step))
    assert f"resuming at step {stop_at}/1000" in capsys.readouterr().out
    assert steps_run[0] == stop_at and len(steps_run) <= 81
    assert (tmp_path / f"{STAGE}.safetensors").exists() and not partial.exists()
