"""`diffdict train` at scale: 2 ranks against 1 process, and torchrun SIGKILLed mid-run.

The store is synthetic (planted sparse maps written with StoreWriter) so the tests spend
their time on training, not on a model. References run in this process / in 2 spawned
processes, one thread each; the killed command is a real `torchrun -m studies train`.
Expected: ITDA on 2 ranks identical to 1 process, the top-k SAE within float rounding; a
killed run, rerun, ends bit-identical to the same run uninterrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dict_fixtures import planted_atoms, planted_data
from diffdict.dictionaries import distributed
from diffdict.dictionaries.store import MapRecord, StoreWriter
from diffdict.studies.config import load_config
from diffdict.studies.run import Run
from test_scale_fit import free_port
from test_scale_harvest import COMMAND_TIMEOUT, REPO, environment, run_command, torchrun_command

SIDE, D, PROMPTS, STEPS = 4, 32, 16, 4  # D: the d of tiny/sdxl mid.0, which `check` verifies
SAE_TOLERANCE = 1e-4  # max |weight difference| 2 ranks vs 1 after 60 Adam steps
CONFIG = """
name = "scale-train"
out = "{out}"

[prompts]
source = "list"
list = [{prompts}]
eval_fraction = 0.25

[[models]]
name = "toy"
id = "tiny/sdxl"

[harvest]
hooks = ["mid.0"]

[train]
checkpoint_every = 5
buffer_tokens = 512
eval_tokens = 256
init_tokens = 256

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "toy"
hook = "mid.0"
n = 64
k = 4
tokens = 7680
batch = 128
options = {{ k_aux = 8, dead_tokens = 512, lr = 0.001 }}

[[dictionaries]]
name = "itda"
architecture = "itda"
model = "toy"
hook = "mid.0"
n = 256
k = 4
tokens = 7680
batch = 128
options = {{ threshold = 0.2 }}
"""
GROUP = "toy-7680-128"


def _fits(run: Path) -> Path:
    """The fit group folder (its name ends with a hash of the fit's settings)."""
    return next((run / "fits").glob(f"{GROUP}-*"), run / "fits" / GROUP)


TOTAL_STEPS = 7680 // 128


def make_run(folder: Path) -> Path:
    """A config and its already harvested store of planted sparse (SIDE, SIDE, D) maps."""
    prompts = [f"prompt {i}" for i in range(PROMPTS)]
    config = folder / "run.toml"
    config.write_text(CONFIG.format(out=folder / "run", prompts=", ".join(f'"{p}"' for p in prompts)))
    store = folder / "run" / "stores" / "toy"
    writer = StoreWriter(store, model="tiny/sdxl", dtype="fp32", settings={"synthetic": True})
    data = planted_data(planted_atoms(48, D, seed=5), PROMPTS * STEPS * SIDE * SIDE, active=3, seed=6, noise=0.01)
    maps = data.reshape(PROMPTS, STEPS, SIDE, SIDE, D)
    for prompt_id, prompt in enumerate(prompts):
        writer.write_shard(
            f"job-{prompt_id:06d}",
            [
                MapRecord(
                    {
                        "hook": "mid.0",
                        "prompt_id": prompt_id,
                        "prompt": prompt,
                        "seed": 0,
                        "step": step,
                        "timestep": 999.0 * (1 - step / STEPS),
                        "t": 1 - step / STEPS,
                        "branch": "cond",
                    },
                    maps[prompt_id, step],
                )
                for step in range(STEPS)
            ],
        )
    writer.finalize()
    return config


def train_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "diffdict", "train", str(config), "--no-progress"]


def weights(config: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(_fits(config.parent / "run") / name / "weights.safetensors"))


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def kill_mid_training(command: list[str], config: Path) -> float:
    """Start `command`, SIGKILL it and every process it started a random moment after its first
    checkpoint; returns that delay. torchrun starts its workers in sessions of their own, so
    they are found through /proc and killed by pid."""

    def checkpoint() -> Path:  # looked up again each time: the group folder appears when training starts
        return _fits(config.parent / "run") / "checkpoints"

    process = subprocess.Popen(
        command, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not (checkpoint().is_dir() and any(checkpoint().iterdir())):
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.01)
        delay = random.uniform(0.0, 0.3)
        time.sleep(delay)
        children = _children(process.pid)
        process.send_signal(signal.SIGKILL)
        for pid in children:
            try:
                subprocess.run(["kill", "-9", str(pid)], check=False)
            except OSError:
                pass
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return delay


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def train_in_process(config: Path) -> None:
    """`diffdict train CONFIG` minus the command line's config check (which builds the model on
    the meta device: seconds per call that these references do not need)."""
    Run(load_config(config), progress=False).train()


def _spawned_rank(rank: int, port: int, config: str) -> None:
    torch.set_num_threads(1)  # what torchrun's OMP_NUM_THREADS=1 gives each rank
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    train_in_process(Path(config))
    distributed.shutdown()


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """Reference: one process, never interrupted."""
    config = make_run(tmp_path_factory.mktemp("single"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_in_process(config)
    finally:
        torch.set_num_threads(threads)
    return config


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Reference: two processes (gloo), never interrupted."""
    config = make_run(tmp_path_factory.mktemp("two-ranks"))
    mp.start_processes(_spawned_rank, args=(free_port(), str(config)), nprocs=2, start_method="spawn", join=True)
    return config


def test_two_ranks_train_like_one_process(single, two_ranks):
    assert_identical(weights(two_ranks, "itda"), weights(single, "itda"))
    assert weights(single, "itda")["atoms"].shape[0] > 20
    sae_2, sae_1 = weights(two_ranks, "sae"), weights(single, "sae")
    worst = max(float((sae_2[k] - sae_1[k]).abs().max()) for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    print(f"SAE trained on 2 ranks vs 1 process: max |weight difference| {worst:.2e}")
    assert worst < SAE_TOLERANCE
    # rank 0 alone wrote the metrics: one row per dictionary per step, plus the held-out evaluation
    metrics = pl.read_parquet(_fits(two_ranks.parent / "run") / "metrics.parquet")
    assert metrics.filter(pl.col("kind") == "train").height == 2 * TOTAL_STEPS
    assert metrics.filter(pl.col("kind") == "eval").height == 2
    single_metrics = pl.read_parquet(_fits(single.parent / "run") / "metrics.parquet")

    def itda_size(frame: pl.DataFrame) -> list:
        return frame.filter((pl.col("name") == "itda") & (pl.col("kind") == "train"))["size"].to_list()

    assert itda_size(metrics) == itda_size(single_metrics)
    saved = json.loads((_fits(two_ranks.parent / "run") / "sae" / "config.json").read_text())
    assert saved["meta"]["fit_seconds"] > 0  # each dictionary's own training time travels with it


def test_torchrun_training_killed_mid_run_resumes_bit_identical(tmp_path, two_ranks):
    """SIGKILL torchrun and both ranks after the first checkpoint, rerun the same command: the
    result equals the uninterrupted 2-rank run bit for bit (and so matches one process)."""
    config = make_run(tmp_path)
    command = torchrun_command(2, "train", str(config), "--no-progress")
    delay = kill_mid_training(command, config)
    assert not (_fits(config.parent / "run") / "sae" / "config.json").exists(), (
        f"training finished within {delay:.2f} s of its first checkpoint; not killed mid-run"
    )
    run_command(command)
    for name in ("sae", "itda"):
        assert_identical(weights(config, name), weights(two_ranks, name))
