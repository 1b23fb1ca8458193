"""`diffdict harvest` at scale on tiny/sdxl: 2 ranks under torchrun, and a SIGKILL mid-run.

Both must leave the same store as one uninterrupted process: the same index rows, the same
shard files with the same tensors, the same statistics. The reference runs in this process;
the tested commands are real subprocesses (`python -m studies` / `torchrun -m studies`).
Everything runs on one thread per process (torchrun's OMP_NUM_THREADS=1), so every run
computes with the same kernels.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffdict.dictionaries.store import INDEX_FILE, SHARD_DIR, read_shard_rows
from diffdict.dictionaries.store_reader import ActivationStore
from diffdict.studies.config import load_config
from diffdict.studies.run import Run

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a red square", "a blue circle", "a green triangle", "a white square", "a red circle", "a blue square"]
CONFIG = """
name = "scale-harvest"
out = "{out}"

[prompts]
source = "file"
file = "prompts.txt"
count = 6
seeds = [0]

[[models]]
name = "tiny"
id = "tiny/sdxl"
steps = 1

[harvest]
hooks = ["down.2.1", "mid.0"]
dtype = "fp32"
batch_size = 1

[[dictionaries]]  # a model is harvested because a dictionary reads it
name = "itda"
architecture = "itda"
model = "tiny"
hook = "mid.0"
n = 64
k = 4
tokens = 256
batch = 64
"""
COMMAND_TIMEOUT = 120  # seconds; a hung collective fails the test instead of hanging CI


def environment() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def write_config(folder: Path, name: str) -> Path:
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    path = folder / f"{name}.toml"
    path.write_text(CONFIG.format(out=folder / name))
    return path


def store_of(config: Path) -> Path:
    return config.parent / config.stem / "stores" / "tiny"


def run_command(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def harvest_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "diffdict", "harvest", str(config), "--no-progress"]


def torchrun_command(ranks: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={ranks}",
        "-m",
        "diffdict",
        *args,
    ]


def assert_same_store(actual: Path, expected: Path) -> None:
    """Same index rows, same shard files holding the same tensors and headers."""
    got, want = ActivationStore(actual), ActivationStore(expected)
    assert got.meta == want.meta
    assert got.index.equals(want.index), "index rows differ"
    names = sorted(p.name for p in (expected / SHARD_DIR).iterdir())
    assert sorted(p.name for p in (actual / SHARD_DIR).iterdir()) == names
    for name in names:
        a, b = load_file(str(actual / SHARD_DIR / name)), load_file(str(expected / SHARD_DIR / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"tensors of {name} differ"
        with (
            safe_open(str(actual / SHARD_DIR / name), "pt") as x,
            safe_open(str(expected / SHARD_DIR / name), "pt") as y,
        ):
            assert x.metadata() == y.metadata()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_sdxl) -> Path:
    """The reference: one process (this one, on one thread like the subprocesses), never interrupted."""
    config = write_config(tmp_path_factory.mktemp("harvest"), "single")
    run = Run(load_config(config), device="cpu", progress=False)
    run._adapters["tiny"] = tiny_sdxl  # the session's copy of the same seeded model: no second build
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run.harvest()
    finally:
        torch.set_num_threads(threads)
    store = store_of(config)
    # 6 prompts x 1 seed x 1 step x 2 hooks x 2 CFG branches, one shard per prompt
    assert ActivationStore(store).index.height == 6 * 2 * 2
    assert len(list((store / SHARD_DIR).iterdir())) == 6
    return store


def test_two_ranks_harvest_the_same_store_as_one(tmp_path, uninterrupted):
    config = write_config(tmp_path, "two-ranks")
    done = run_command(torchrun_command(2, "harvest", str(config), "--no-progress"))
    assert done.stdout.count("tiny: 24 maps") == 2  # both ranks ran and both see the whole store
    assert_same_store(store_of(config), uninterrupted)


def test_harvest_killed_mid_run_resumes_to_the_same_store(tmp_path, uninterrupted):
    config = write_config(tmp_path, "killed")
    shards = store_of(config) / SHARD_DIR
    process = subprocess.Popen(
        harvest_command(config), cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not (shards.is_dir() and any(p.suffix == ".safetensors" for p in shards.iterdir())):
            assert process.poll() is None, "the harvest ended before writing a shard"
            assert time.monotonic() < deadline, "no shard appeared in time"
            time.sleep(0.02)
        # a random point among the following jobs: each takes ~0.1 s on a quiet machine, so a
        # longer delay could outlive the whole harvest and kill nothing
        delay = random.uniform(0.0, 0.1)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill() if process.poll() is None else None
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"the harvest finished within {delay:.2f} s; not killed mid-run"
    assert not (shards.parent / INDEX_FILE).exists()  # the index is only written once all shards exist
    finished = [p for p in shards.iterdir() if p.name.endswith(".safetensors")]
    assert 1 <= len(finished) < 6
    for shard in finished:  # every file under a final name is complete: the rename is the commit
        assert len(read_shard_rows(shard)) == 4
    run_command(harvest_command(config))
    assert not [p for p in shards.iterdir() if ".tmp-" in p.name]  # a killed writer's temporary is gone
    assert_same_store(store_of(config), uninterrupted)
