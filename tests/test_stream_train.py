"""Stream training (train.source = "stream"): resumable, rank-independent, and as good as a store.

The source is synthetic: each job's maps are planted sparse activations seeded by (prompt, seed,
step), so the tests spend their time on the stream and the trainer, not on a model. Expected: a run
interrupted after a checkpoint and resumed ends bit-identical to an uninterrupted one; 2 ranks
(gloo, spawned) equal 1 process (ITDA exactly, the SAE within float rounding); an SAE trained from
the stream reaches the held-out FVU of one trained from a store of the same maps at equal tokens.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
import torch
import torch.multiprocessing as mp

from dict_fixtures import free_port, one_thread, planted_atoms  # noqa: F401  (one_thread: a fixture)
from diffdict.dictionaries import distributed
from diffdict.dictionaries.errors import DamagedFileError
from diffdict.dictionaries.jobs import Job, MapRecord, plan_prompt_jobs
from diffdict.dictionaries.metrics import evaluate
from diffdict.dictionaries.store import StoreWriter
from diffdict.dictionaries.store_reader import ActivationStore
from diffdict.dictionaries.stream import StreamedDictionary, StreamSettings, StreamSource, train_stream
from diffdict.dictionaries.train import DictionarySpec, TrainSettings, train

SIDE, D, STEPS, PROMPTS = 4, 24, 2, 24
ATOMS = planted_atoms(40, D, seed=3)


def planted_map(prompt_id: int, seed: int, step: int) -> torch.Tensor:
    """(SIDE, SIDE, D): every token a positive mix of 3 planted atoms, seeded by what made it."""
    g = torch.Generator().manual_seed(1000 * prompt_id + 10 * seed + step)
    tokens = SIDE * SIDE
    picks = torch.stack([torch.randperm(ATOMS.shape[0], generator=g)[:3] for _ in range(tokens)])
    weights = torch.rand(tokens, 3, generator=g) + 0.5
    x = (weights.unsqueeze(-1) * ATOMS[picks]).sum(1) + 0.01 * torch.randn(tokens, D, generator=g)
    return x.reshape(SIDE, SIDE, D)


def records(job: Job) -> list[MapRecord]:
    return [
        MapRecord(
            {
                "hook": "mid.0",
                "prompt_id": p,
                "prompt": f"prompt {p}",
                "seed": job.seed,
                "step": step,
                "timestep": 1.0 - step / STEPS,
                "t": 1.0 - step / STEPS,
                "branch": "cond",
            },
            planted_map(p, job.seed, step),
        )
        for p in job.prompt_ids
        for step in range(STEPS)
    ]


def source(prompt_ids: Iterable[int] = range(PROMPTS)) -> StreamSource:
    return StreamSource(
        jobs=plan_prompt_jobs(list(prompt_ids), [0], 2), generate=records, hook_d={"mid.0": D}, window_jobs=4
    )  # 4 jobs x 2 prompts x 2 steps x 16 cells = 256 tokens


def entries() -> list[StreamedDictionary]:
    sae = DictionarySpec(
        "sae", "topk_sae", "mid.0", {"n": 64, "k": 4, "k_aux": 8, "dead_tokens": 256, "lr": 1e-3}, branch="cond"
    )
    itda = DictionarySpec("itda", "itda", "mid.0", {"max_size": 256, "L": 4, "threshold": 0.3}, branch="cond")
    return [
        StreamedDictionary(sae, tokens=60 * 32, batch_size=32),
        StreamedDictionary(itda, tokens=30 * 16, batch_size=16),
    ]


class Interrupted(Exception):
    pass


def weights(dictionaries) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.clone() for name, dic in dictionaries.items() for k, v in dic.tensors().items()}


@pytest.mark.usefixtures("one_thread")
def test_stream_resumes_bit_identical(tmp_path):
    settings = StreamSettings(seed=0, checkpoint_every=8, init_tokens=64)
    reference, _ = train_stream(source(), entries(), settings, tmp_path / "whole", progress=False)

    def stop(window: int) -> None:
        if (tmp_path / "killed" / "checkpoints" / "stream").is_dir():
            raise Interrupted(window)

    with pytest.raises(Interrupted):
        train_stream(source(), entries(), settings, tmp_path / "killed", progress=False, on_window=stop)
    state_file = tmp_path / "killed" / "checkpoints" / "stream" / "state.json"
    state = state_file.read_text()
    assert '"window": ' in state and '"window": 0' not in state
    state_file.write_text(state[: len(state) // 2])  # damaged: refused with the file and the fix, nothing deleted
    with pytest.raises(DamagedFileError, match=r"state\.json.*delete .*checkpoints/stream"):
        train_stream(source(), entries(), settings, tmp_path / "killed", progress=False)
    state_file.write_text(state)
    resumed, _ = train_stream(source(), entries(), settings, tmp_path / "killed", progress=False)
    a, b = weights(reference), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["sae"].meta["train_steps"] == 60 and resumed["itda"].meta["train_steps"] == 30
    assert resumed["itda"].n > 10  # ITDA admitted atoms: the comparison is not of empty dictionaries


def _rank(rank: int, port: int, out: str, result: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    dictionaries, _ = train_stream(
        source(), entries(), StreamSettings(checkpoint_every=8, init_tokens=64), out, progress=False
    )
    if rank == 0:
        torch.save(weights(dictionaries), result)
    distributed.shutdown()


@pytest.mark.usefixtures("one_thread")
def test_two_ranks_stream_like_one_process(tmp_path):
    single, _ = train_stream(
        source(), entries(), StreamSettings(checkpoint_every=8, init_tokens=64), tmp_path / "one", progress=False
    )
    result = tmp_path / "two.pt"
    mp.start_processes(
        _rank, args=(free_port(), str(tmp_path / "two"), str(result)), nprocs=2, start_method="spawn", join=True
    )
    two, one = torch.load(result), weights(single)
    for key in [k for k in one if k.startswith("itda.")]:
        assert torch.equal(two[key], one[key]), key
    worst = max(float((two[k] - one[k]).abs().max()) for k in one if k.startswith("sae."))
    print(f"stream SAE on 2 ranks vs 1 process: max |weight difference| {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.usefixtures("one_thread")
def test_stream_reaches_store_fvu_at_equal_tokens(tmp_path):
    """The same training maps, once stored and once streamed, an SAE each at equal tokens, three seeds
    each (one run varies by about +-7% with its seed at this size): mean held-out FVU within 5%."""
    train_ids, eval_ids = list(range(20)), list(range(20, PROMPTS))
    writer = StoreWriter(tmp_path / "store", model="planted", dtype="fp32", settings={"synthetic": True})
    for job in plan_prompt_jobs(train_ids, [0], 2):
        writer.write_shard(job.shard_name, records(job))
    writer.finalize()
    store = ActivationStore(tmp_path / "store")  # training maps only: eval_fraction 0 trains on all of it
    held = torch.cat([planted_map(p, 0, s).reshape(-1, D) for p in eval_ids for s in range(STEPS)])
    sae = entries()[0]
    sae.tokens = tokens = 300 * 32  # past the plateau: about four passes over the training maps
    fvu = {"store": [], "stream": []}
    for seed in range(3):
        stored = train(
            store,
            [sae.spec],
            TrainSettings(
                tokens=tokens,
                batch_size=32,
                checkpoint_every=1000,
                seed=seed,
                buffer_tokens=256,
                eval_fraction=0.0,
                init_tokens=64,
            ),
            tmp_path / f"store-{seed}",
            progress=False,
        )["sae"]
        streamed, _ = train_stream(
            source(train_ids),
            [sae],
            StreamSettings(seed=seed, checkpoint_every=1000, init_tokens=64),
            tmp_path / f"stream-{seed}",
            progress=False,
        )
        fvu["store"].append(float(evaluate(stored, [held])["fvu"]))
        fvu["stream"].append(float(evaluate(streamed["sae"], [held])["fvu"]))
    mean = {source: sum(values) / len(values) for source, values in fvu.items()}
    print(
        f"held-out FVU at {tokens} tokens, seeds 0-2: store {fvu['store']} (mean {mean['store']:.4f}), "
        f"stream {fvu['stream']} (mean {mean['stream']:.4f})"
    )
    assert abs(mean["stream"] - mean["store"]) <= 0.05 * mean["store"]
    assert mean["store"] < 0.2  # both learned: the comparison is not between two failures


STREAM_RUN = """
name = "stream-run"
out = "{out}"

[prompts]
source = "list"
list = [{prompts}]
eval_fraction = 0.34

[[models]]
name = "toy"
id = "tiny/sdxl"
steps = 2

[harvest]
hooks = ["mid.0"]
batch_size = 4
prompts = 6

[train]
source = "stream"
checkpoint_every = 4
buffer_tokens = 512
eval_tokens = 128
init_tokens = 128

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "toy"
hook = "mid.0"
n = 64
k = 4
tokens = 3840
batch = 128

[[dictionaries]]
name = "itda"
architecture = "itda"
model = "toy"
hook = "mid.0"
n = 256
k = 4
tokens = 3840
batch = 128
options = {{ threshold = 0.2 }}

[studies.compare]
pairs = [["sae", "itda"]]

[studies.training]
"""


@pytest.mark.usefixtures("one_thread")
def test_a_stream_run_trains_beyond_the_store_and_the_studies_read_it(tmp_path):
    """diffdict's stages on a stream config: the store keeps 6 of 16 prompts (2 held out), the stream
    trains on the other 14 (never a held-out one), and the studies run on the small store."""
    import polars as pl

    from diffdict.studies.config import load_config
    from diffdict.studies.pipeline import run_studies
    from diffdict.studies.run import Run

    prompts = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "square", "star", "cat")]
    path = tmp_path / "stream.toml"
    path.write_text(STREAM_RUN.format(out=tmp_path / "run", prompts=", ".join(f'"{p}"' for p in prompts)))
    run = Run(load_config(path), progress=False)
    store = run.harvest()["toy"]
    assert sorted(store.index["prompt_id"].unique().to_list()) == list(range(6))
    held_out = set(run.eval_prompt_ids("toy"))
    assert len(held_out) == 2
    run.train()
    group = run.dictionary_dir("sae").parent
    assert group.name.startswith("toy-stream-")
    assert sorted(p.name for p in group.iterdir()) == [
        "checkpoints",
        "features.parquet",
        "itda",
        "metrics",
        "metrics.parquet",
        "sae",
        "settings.json",
    ]
    trained_on = set(run.dictionary("itda").provenance["prompt_id"].tolist())  # where ITDA's atoms came from
    assert trained_on & set(range(6, 16)) and not trained_on & held_out
    metrics = pl.read_parquet(group / "metrics.parquet")
    assert set(metrics.filter(pl.col("kind") == "eval")["name"]) == {"sae", "itda"}
    assert metrics.filter((pl.col("kind") == "train") & (pl.col("name") == "sae"))["step"].max() == 30
    run_studies(run)
    assert pl.read_parquet(run.table_path("compare_metrics")).height >= 2
    assert pl.read_parquet(run.table_path("training_summary")).height == 2


@pytest.mark.usefixtures("one_thread")
def test_torchrun_stream_training_killed_resumes_like_one_process(tmp_path):
    """`torchrun` 2 ranks of `diffdict train` on a stream config, SIGKILLed (agent and workers) after its
    first checkpoint and rerun, against one uninterrupted process: ITDA identical, the SAE within rounding."""
    import random
    import signal
    import subprocess
    import time

    from safetensors.torch import load_file

    from diffdict.studies.config import load_config
    from diffdict.studies.run import Run
    from test_scale_harvest import COMMAND_TIMEOUT, REPO, environment, run_command, torchrun_command
    from test_scale_train import _children

    prompts = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "square", "star", "cat")]
    runs = {}
    for name in ("one", "two"):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            STREAM_RUN.format(out=tmp_path / name, prompts=", ".join(f'"{p}"' for p in prompts)).replace(
                "buffer_tokens = 512", "buffer_tokens = 1024"
            )
        )
        runs[name] = Run(load_config(path), progress=False)
        runs[name].harvest()
    runs["one"].train()
    group = runs["two"].dictionary_dir("sae").parent
    command = torchrun_command(2, "train", str(tmp_path / "two.toml"), "--no-progress")
    process = subprocess.Popen(
        command, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not (group / "checkpoints" / "stream").is_dir():
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.3))
        children = _children(process.pid)
        process.send_signal(signal.SIGKILL)
        for pid in children:
            subprocess.run(["kill", "-9", str(pid)], check=False)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert not (group / "sae" / "config.json").exists(), "training finished before it was killed"
    run_command(command)
    one, two = (load_file(str(r.dictionary_dir(n) / "weights.safetensors")) for r in runs.values() for n in ["itda"])
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    sae_one, sae_two = (load_file(str(r.dictionary_dir("sae") / "weights.safetensors")) for r in runs.values())
    worst = max(float((sae_one[k] - sae_two[k]).abs().max()) for k in sae_one)
    print(f"stream SAE, torchrun 2 ranks killed and resumed vs 1 process: max |weight difference| {worst:.2e}")
    assert worst < 1e-4
