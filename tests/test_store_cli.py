"""`diffdict harvest` then `diffdict train` on a study config with the real tiny SDXL adapter."""

from __future__ import annotations

import re

import polars as pl
import pytest

from dict_fixtures import one_thread  # noqa: F401 (fixture)
from diffdict.dictionaries.store_reader import ActivationStore
from diffdict.studies import cli

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """
name = "store-cli"
out = "{out}"

[prompts]
source = "file"
file = "prompts.txt"
count = 100
eval_fraction = 0.25
seeds = [0, 1]

[[models]]
name = "tiny"
id = "tiny/sdxl"
steps = 2

[harvest]
hooks = ["down.2.1", "mid.0"]
dtype = "fp16"
batch_size = 2

[train]
checkpoint_every = 4
buffer_tokens = 1024

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "tiny"
hook = "down.2.1"
n = 64
k = 4
tokens = 2048
batch = 128

[[dictionaries]]
name = "itda"
architecture = "itda"
model = "tiny"
hook = "mid.0"
n = 64
k = 4
tokens = 2048
batch = 128
"""


def _write(tmp_path, text=CONFIG):
    (tmp_path / "prompts.txt").write_text("a red square\na blue circle\n\na green triangle\na white square\n")
    config = tmp_path / "run.toml"
    config.write_text(text.format(out=tmp_path / "run"))
    return config


def test_harvest_and_train_commands_on_tiny_sdxl(tmp_path, capsys):
    config = _write(tmp_path)
    assert cli.main(["harvest", str(config), "--no-progress"]) == 0
    store = ActivationStore(tmp_path / "run" / "stores" / "tiny")
    # 4 prompts x 2 seeds x 2 hooks x 2 steps x 2 CFG branches (tiny/sdxl defaults to guidance > 1)
    assert store.index.height == 4 * 2 * 2 * 2 * 2
    assert set(store.index["model"]) == {"tiny/sdxl"} and store.meta["dtype"] == "fp16"
    assert store.index.filter(pl.col("hook") == "mid.0")["shape"][0].to_list() == [8, 8, 32]
    assert cli.main(["harvest", str(config), "--no-progress"]) == 0  # a finished harvest is a no-op resume
    assert cli.main(["train", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sae: topk_sae n=64 k=4" in out and "held-out fvu" in out
    metrics = pl.read_parquet(next((tmp_path / "run" / "fits").glob("tiny-2048-128-*")) / "metrics.parquet")
    assert metrics.filter(pl.col("kind") == "train").height == 2 * 16


@pytest.mark.parametrize(
    "edit, message",
    [
        (("batch_size = 2", "batchsize = 2"), r"run.toml: harvest.batchsize: unknown key; did you mean 'batch_size'\?"),
        (('dtype = "fp16"', 'dtype = "fp8"'), r"harvest.dtype: 'fp8' is not allowed.*Allowed: fp32, fp16, bf16"),
        (('architecture = "itda"', 'architecture = "itda2"'), r"did you mean 'itda'"),
        (("k = 4\ntokens", "k = 400\ntokens"), r"k=400 is larger than n=64"),
        (("tokens = 2048", 'tokens = "many"'), r"dictionaries\[0\].tokens: expected an integer, got str 'many'"),
        (("[train]", "[trian]"), r"trian: unknown key; did you mean 'train'\?"),
    ],
)
def test_config_errors_name_file_key_and_fix(tmp_path, capsys, edit, message):
    config = _write(tmp_path, CONFIG.replace(*edit))
    assert cli.main(["train", str(config)]) == 2
    assert re.search(message, capsys.readouterr().err)
