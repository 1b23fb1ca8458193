"""`diffdict harvest` on the real tiny SDXL adapter, then `diffdict train`; config errors exit 2 with a fix."""
from __future__ import annotations

import re

import polars as pl
import pytest

from dict_fixtures import one_thread  # noqa: F401 (fixture)
from dictionaries.store_reader import ActivationStore
from studies import cli

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """
[harvest]
model = "tiny/sdxl"
hooks = ["down.2.1", "mid.0"]
prompts_file = "prompts.txt"
seeds = [0, 1]
dtype = "fp16"
out = "store"
batch_size = 2
steps = 2

[train]
out = "dicts"
tokens = 2048
batch_size = 128
checkpoint_every = 4
buffer_tokens = 1024
eval_fraction = 0.25

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
hook = "down.2.1"
n = 64
k = 4

[[dictionaries]]
name = "itda"
architecture = "itda"
hook = "mid.0"
L = 4
"""


def test_harvest_and_train_commands_on_tiny_sdxl(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a red square\na blue circle\n\na green triangle\na white square\n")
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    assert cli.main(["harvest", str(config), "--no-progress"]) == 0
    store = ActivationStore(tmp_path / "store")
    # 4 prompts x 2 seeds x 2 hooks x 2 steps x 2 CFG branches (tiny/sdxl defaults to guidance > 1)
    assert store.index.height == 4 * 2 * 2 * 2 * len(set(store.index["branch"]))
    assert set(store.index["model"]) == {"tiny/sdxl"} and store.meta["dtype"] == "fp16"
    assert store.index.filter(pl.col("hook") == "mid.0")["shape"][0].to_list() == [8, 8, 32]
    assert cli.main(["harvest", str(config), "--no-progress"]) == 0  # a finished harvest is a no-op resume
    assert cli.main(["train", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sae: topk_sae n=64" in out and "held-out fvu" in out
    metrics = pl.read_parquet(tmp_path / "dicts" / "metrics.parquet")
    assert metrics.filter(pl.col("kind") == "train").height == 2 * 16


@pytest.mark.parametrize("edit, message", [
    (("batch_size = 2", "batchsize = 2"), r"run.toml: \[harvest\]: unknown key 'batchsize' \(did you mean 'batch_size'\?\)"),
    (('dtype = "fp16"', 'dtype = "fp8"'), r"\[harvest\].dtype = 'fp8' is not allowed.*\['bf16', 'fp16', 'fp32'\]"),
    (('architecture = "itda"', 'architecture = "itda2"'), r"did you mean 'itda'"),
    (("k = 4", "k = 400"), r"k=400 is larger than n=64"),
    (("tokens = 2048", 'tokens = "many"'), r"\[train\].tokens = 'many' has the wrong type"),
    (("[train]", "[trian]"), r"unknown section \[trian\] \(did you mean \[train\]\?\)"),
])
def test_config_errors_name_file_key_and_fix(tmp_path, capsys, edit, message):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.replace(*edit))
    assert cli.main(["train", str(config)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_store_is_explained(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    assert cli.main(["train", str(config)]) == 2
    assert "diffdict harvest CONFIG" in capsys.readouterr().err
