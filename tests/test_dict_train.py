"""Training from a store: a killed and resumed run equals an uninterrupted one; metrics in parquet."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from dict_fixtures import PROMPTS, FakeAdapter, one_thread  # noqa: F401 (fixture)
from diffdict.dictionaries.harvest import harvest
from diffdict.dictionaries.train import DictionarySpec, TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = [
    DictionarySpec("sae_wide", "topk_sae", "down.2.1", {"n": 48, "k": 4, "dead_tokens": 256}),
    DictionarySpec("sae_narrow", "topk_sae", "down.2.1", {"n": 24, "k": 2}),
    DictionarySpec("itda", "itda", "down.2.1", {"L": 4, "threshold": 0.5}),
    DictionarySpec("mid_sae", "topk_sae", "mid.0", {"n": 16, "k": 2}, steps=[0]),
]
SETTINGS = TrainSettings(
    tokens=64 * 10,
    batch_size=64,
    checkpoint_every=3,
    buffer_tokens=200,
    init_tokens=256,
    eval_tokens=128,
    eval_fraction=0.2,
)


class Killed(Exception):
    pass


def test_resumed_training_equals_uninterrupted(tmp_path):
    store = harvest(
        FakeAdapter(), PROMPTS, [0, 1], ["down.2.1", "mid.0"], tmp_path / "store", dtype="fp32", progress=False
    )
    whole = train(store, SPECS, SETTINGS, tmp_path / "whole", progress=False)

    def kill_at_step_8(step):
        if step == 8:  # after the checkpoint at 6, before the next one
            raise Killed()

    with pytest.raises(Killed):
        train(store, SPECS, SETTINGS, tmp_path / "part", progress=False, on_step=kill_at_step_8)
    resumed = train(store, SPECS, SETTINGS, tmp_path / "part", progress=False)
    for name, dictionary in whole.items():
        for key, tensor in dictionary.tensors().items():
            assert torch.equal(tensor, resumed[name].tensors()[key]), (name, key)
    metrics = pl.read_parquet(tmp_path / "whole" / "metrics.parquet")
    assert metrics.equals(pl.read_parquet(tmp_path / "part" / "metrics.parquet"))
    train_rows = metrics.filter(pl.col("kind") == "train")
    assert train_rows.group_by("name").len().sort("name")["len"].to_list() == [10, 10, 10, 10]
    evals = metrics.filter(pl.col("kind") == "eval")
    assert set(evals["name"]) == {s.name for s in SPECS} and evals["fvu"].is_finite().all()
    features = pl.read_parquet(tmp_path / "whole" / "features.parquet")
    assert features.filter(pl.col("name") == "sae_wide").height == 48
    assert (tmp_path / "whole" / "sae_wide" / "config.json").is_file()
    assert whole["mid_sae"].meta["steps"] == [0] and whole["mid_sae"].d == 8


def test_bad_specs_are_named(tmp_path):
    store = harvest(FakeAdapter(), PROMPTS[:3], [0], ["mid.0"], tmp_path / "store", dtype="fp32", progress=False)
    with pytest.raises(ValueError, match="d=32 but hook 'mid.0' has d=8"):
        train(store, [DictionarySpec("x", "topk_sae", "mid.0", {"n": 8, "k": 2, "d": 32})], SETTINGS, tmp_path / "o")
    with pytest.raises(ValueError, match="unknown key 'kk'.*did you mean 'k'"):
        train(store, [DictionarySpec("x", "topk_sae", "mid.0", {"n": 8, "kk": 2})], SETTINGS, tmp_path / "o")
    with pytest.raises(ValueError, match="names must be unique"):
        train(store, [SPECS[3], SPECS[3]], SETTINGS, tmp_path / "o")
