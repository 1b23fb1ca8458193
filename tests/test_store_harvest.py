"""Harvest into the store: index contents, exact round trip, kill + resume, corruption, bad input."""

from __future__ import annotations

import os
from typing import Any

import polars as pl
import pytest
import torch

from dict_fixtures import PROMPTS, FakeAdapter, KilledHarvest, one_thread  # noqa: F401 (fixture)
from diffdict.dictionaries.harvest import harvest
from diffdict.dictionaries.store import CorruptShardError, StoreWriter
from diffdict.dictionaries.store_reader import ActivationStore

pytestmark = pytest.mark.usefixtures("one_thread")
HOOKS = ["down.2.1", "mid.0"]


def run(adapter, out, **kwargs):
    options: dict[str, Any] = dict(
        prompts=PROMPTS[:5], seeds=[0, 3], hooks=HOOKS, out=out, dtype="fp32", batch_size=2, progress=False
    )
    options.update(kwargs)
    return harvest(
        adapter, options.pop("prompts"), options.pop("seeds"), options.pop("hooks"), options.pop("out"), **options
    )


def test_index_has_one_row_per_map_and_maps_round_trip(tmp_path):
    adapter = FakeAdapter()
    store = run(adapter, tmp_path / "s", guidance=3.0)  # CFG: both branches
    index = store.index
    assert index.height == 5 * 2 * 2 * 2 * 2  # prompts x seeds x hooks x steps x branches
    for column in (
        "model",
        "hook",
        "prompt_id",
        "prompt",
        "seed",
        "step",
        "timestep",
        "t",
        "branch",
        "shard",
        "offset",
        "shape",
    ):
        assert column in index.columns
    assert index.select("hook", "prompt_id", "seed", "step", "branch").is_unique().all()
    assert set(index["branch"]) == {"cond", "uncond"} and set(index["model"]) == {"fake/model"}
    rows = index.filter(
        (pl.col("hook") == "mid.0")
        & (pl.col("prompt_id") == 3)
        & (pl.col("seed") == 3)
        & (pl.col("step") == 1)
        & (pl.col("branch") == "uncond")
    )
    (value,) = store.read_maps(rows)
    expected = adapter._map(PROMPTS[3], 3, 1, "mid.0", "uncond").reshape(-1, 8)
    assert torch.equal(value, expected)
    assert rows["shape"][0].to_list() == [4, 4, 8] and rows["t"][0] == pytest.approx(0.5)


def test_fp16_store(tmp_path):
    store = run(FakeAdapter(), tmp_path / "s", dtype="fp16")
    tokens = store.tokens(store.select("down.2.1"))
    assert tokens.shape[0] == 5 * 2 * 2 * 16
    assert (tmp_path / "s" / "shards").is_dir() and store.meta["dtype"] == "fp16"


def test_killed_harvest_resumes_to_the_same_store(tmp_path):
    whole = run(FakeAdapter(), tmp_path / "whole")
    with pytest.raises(KilledHarvest):
        run(FakeAdapter(die_after_calls=2), tmp_path / "part")
    # a kill while a shard was being written leaves only a temporary, which resume removes
    (tmp_path / "part" / "shards" / "job-000002.safetensors.tmp-deadbeef").write_bytes(b"half a shard")
    resumed_adapter = FakeAdapter()
    resumed = run(resumed_adapter, tmp_path / "part")
    assert resumed_adapter.calls == len(whole.index["shard"].unique()) - 2  # finished jobs not redone
    assert resumed.index.equals(whole.index)
    for a, b in zip(whole.read_maps(whole.index), resumed.read_maps(resumed.index)):
        assert torch.equal(a, b)
    assert not [p for p in (tmp_path / "part").rglob("*") if ".tmp-" in p.name]


def test_resume_with_different_settings_is_refused(tmp_path):
    run(FakeAdapter(), tmp_path / "s")
    with pytest.raises(ValueError, match="dtype: 'fp32' -> 'fp16'.*--force.*new `out`"):
        run(FakeAdapter(), tmp_path / "s", dtype="fp16")


def flip_byte(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_and_truncated_shards_are_detected_and_named(tmp_path):
    store = run(FakeAdapter(), tmp_path / "s")
    shard = tmp_path / "s" / "shards" / "job-000001.safetensors"
    flip_byte(shard, 10)
    rows = store.index.filter(pl.col("shard") == "job-000001")
    with pytest.raises(CorruptShardError, match=r"job-000001\.safetensors: map \d+ fails its CRC-32") as caught:
        store.read_maps(rows)
    offset = int(str(caught.value).split("map ")[1].split()[0])
    hook = rows.filter(pl.col("offset") == offset)["hook"][0]
    with pytest.raises(CorruptShardError, match="job-000001"):  # also inside a stream: never skipped
        list(store.stream(hook, batch_size=16))
    other = tmp_path / "s" / "shards" / "job-000003.safetensors"
    os.truncate(other, other.stat().st_size - 100)
    with pytest.raises(CorruptShardError, match=r"job-000003\.safetensors.*Delete this file"):
        StoreWriter(
            tmp_path / "s", "fake/model", "fp32", settings=ActivationStore(tmp_path / "s").meta["settings"]
        ).finalize()


def test_wrong_d_and_non_finite_activations_are_named(tmp_path):
    with pytest.raises(ValueError, match="hook mid.0: captured d=8 but the adapter declares d=9"):
        run(FakeAdapter(lie_about_d={"mid.0": 9}), tmp_path / "a")
    with pytest.raises(
        ValueError, match=r"non-finite.*hook down.2.1, step 0, branch cond, prompt 2 \('a red triangle'\), seed 0"
    ):
        run(FakeAdapter(nan_for_prompt=PROMPTS[2]), tmp_path / "b")
    with pytest.raises(ValueError, match=r"unknown hook\(s\) \['up.9'\]"):
        run(FakeAdapter(), tmp_path / "c", hooks=["up.9"])
    with pytest.raises(FileNotFoundError, match="did not finish.*resume"):
        ActivationStore(tmp_path / "b")
