"""Study tables follow their inputs: a rerun recomputes exactly the studies whose config table, fits,
stores or prompts changed, and an unchanged rerun recomputes nothing."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dict_fixtures import one_thread  # noqa: F401  (a fixture)
from diffdict.studies.config import load_config
from diffdict.studies.pipeline import run_studies
from diffdict.studies.run import Run

CONFIG = """
name = "inputs"
out = "{out}"

[prompts]
source = "list"
list = [{prompts}]
eval_fraction = 0.34

[[models]]
name = "tiny"
id = "tiny/sdxl"
steps = 1

[harvest]
hooks = ["mid.0"]

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "tiny"
hook = "mid.0"
n = {n}
k = 4
tokens = 1024
batch = 128

[[dictionaries]]
name = "itda"
architecture = "itda"
model = "tiny"
hook = "mid.0"
n = 128
k = 4
tokens = 1024
batch = 128
options = {{ threshold = {threshold} }}

[studies.compare]
pairs = [["sae", "itda"]]
random_directions = {directions}

[studies.training]
"""
PROMPTS = ["a red square", "a small blue circle", "a green triangle", "a big cat", "a dog", "a tree"]


def make_run(
    folder: Path,
    n: int = 64,
    directions: int = 0,
    prompts: list[str] = PROMPTS,
    force: bool = False,
    itda_threshold: float = 0.3,
) -> Run:
    path = folder / "inputs.toml"
    path.write_text(
        CONFIG.format(
            out=folder / "run",
            n=n,
            directions=directions,
            threshold=itda_threshold,
            prompts=", ".join(f'"{p}"' for p in prompts),
        )
    )
    run = Run(load_config(path), progress=False, force=force)  # force: re-harvest a store of other prompts
    run.harvest()
    run.train()
    return run


@pytest.mark.usefixtures("one_thread")
def test_reruns_recompute_exactly_the_studies_whose_inputs_changed(tmp_path):
    assert set(run_studies(make_run(tmp_path))) == {"compare", "training"}
    assert run_studies(make_run(tmp_path)) == {}  # nothing changed: nothing recomputed
    assert set(run_studies(make_run(tmp_path, directions=8))) == {"compare"}  # its own option
    summary = lambda run: pl.read_parquet(run.table_path("training_summary"))  # noqa: E731
    before = summary(make_run(tmp_path, directions=8))
    changed = make_run(tmp_path, n=32, directions=8)  # one dictionary's n: both studies read it
    assert set(run_studies(changed)) == {"compare", "training"}
    after = summary(changed)
    sae = pl.col("dictionary") == "sae"
    assert before.filter(sae)["heldout_fvu"].to_list() != after.filter(sae)["heldout_fvu"].to_list()
    assert set(run_studies(make_run(tmp_path, n=32, directions=8, prompts=[*PROMPTS, "a house"], force=True))) == {
        "compare",
        "training",
    }  # other prompts: other stores, fits and tables


@pytest.mark.usefixtures("one_thread")
def test_the_report_names_each_study_s_inputs(tmp_path):
    from diffdict.studies.pipeline import build_report

    run = make_run(tmp_path)
    run_studies(run)
    report = build_report(run).read_text()
    sae, itda = (run.fit_identity(run.config.dictionary(name)) for name in ("sae", "itda"))
    assert f"dictionaries itda (fit {itda}), sae (fit {sae})" in report
    assert "stores tiny" in report


@pytest.mark.usefixtures("one_thread")
def test_changing_one_dictionary_retrains_that_dictionary_only(tmp_path):
    run = make_run(tmp_path)
    sae_weights = run.dictionary_dir("sae") / "weights.safetensors"
    before = sae_weights.stat().st_mtime_ns, (run.dictionary_dir("itda") / "weights.safetensors").read_bytes()
    changed = make_run(tmp_path, itda_threshold=0.1)  # only ITDA's option changes
    assert changed.dictionary_dir("sae") == run.dictionary_dir("sae")  # the same group folder
    assert sae_weights.stat().st_mtime_ns == before[0]  # the SAE was not trained again
    assert (changed.dictionary_dir("itda") / "weights.safetensors").read_bytes() != before[1]
    metrics = pl.read_parquet(changed.dictionary_dir("itda").parent / "metrics.parquet")
    itda = metrics.filter((pl.col("name") == "itda") & (pl.col("kind") == "train"))
    assert itda["step"].to_list() == sorted(set(itda["step"].to_list()))  # its old rows are gone, not mixed in
    assert metrics.filter(pl.col("kind") == "eval").height == 2
    assert set(run_studies(changed)) == {"compare", "training"}  # both read the ITDA
