"""Prompts from tables and datasets: local parquet / jsonl / csv files, a local `datasets` folder
(streamed or not), a seeded shuffle, Hub ids checked without a download. Offline throughout."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from diffdict.studies import prompt_sources
from diffdict.studies.check import check_config
from diffdict.studies.config import ConfigError, PromptsSection, load_config
from diffdict.studies.prompts import study_prompts

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = [f"caption number {i}" for i in range(40)]


def _frame() -> pl.DataFrame:
    # An empty and a missing caption: skipped, never counted.
    texts = CAPTIONS[:5] + ["  ", None] + CAPTIONS[5:]
    return pl.DataFrame({"id": list(range(len(texts))), "top_caption": texts})


def _write_tables(folder: Path) -> dict[str, Path]:
    frame = _frame()
    paths = {suffix: folder / f"captions.{suffix}" for suffix in ("parquet", "jsonl", "csv")}
    frame.write_parquet(paths["parquet"])
    frame.write_ndjson(paths["jsonl"])
    frame.write_csv(paths["csv"])
    return paths


def _config(tmp_path: Path, prompts: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(
        f'name = "prompts"\nout = "{tmp_path / "run"}"\n\n[prompts]\n{prompts}\n\n'
        '[[models]]\nname = "one"\nid = "tiny/sdxl"\n'
    )
    return path


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "csv"])
def test_local_tables_give_the_first_count_captions_of_the_column(tmp_path, suffix):
    paths = _write_tables(tmp_path)
    config = load_config(
        _config(tmp_path, f'source = "dataset"\ndataset = "captions.{suffix}"\ncolumn = "top_caption"\ncount = 12')
    )
    prompts = study_prompts(config.prompts, config.path)
    assert [p.text for p in prompts] == CAPTIONS[:12]
    assert [p.id for p in prompts] == list(range(12))
    assert paths[suffix].exists()


def test_a_table_named_as_prompts_file_reads_its_column(tmp_path):
    _write_tables(tmp_path)
    config = load_config(_config(tmp_path, 'source = "file"\nfile = "captions.csv"\ncolumn = "top_caption"\ncount = 3'))
    assert [p.text for p in study_prompts(config.prompts, config.path)] == CAPTIONS[:3]


def test_seeded_shuffle_is_reproducible_and_draws_from_the_whole_table(tmp_path):
    _write_tables(tmp_path)

    def draw(seed: int) -> list[str]:
        config = load_config(
            _config(
                tmp_path,
                f'source = "dataset"\ndataset = "captions.parquet"\n'
                f'column = "top_caption"\ncount = 10\nshuffle = true\nshuffle_seed = {seed}',
            )
        )
        return [p.text for p in study_prompts(config.prompts, config.path)]

    first = draw(1)
    assert first == draw(1)
    assert first != draw(2)
    assert len(first) == 10 and len(set(first)) == 10 and set(first) <= set(CAPTIONS)
    assert first != CAPTIONS[:10]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """`datasets` writes prepared (non-streamed) datasets to its cache: keep it in the test's folder."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.mark.usefixtures("datasets_cache")
@pytest.mark.parametrize("streaming", [True, False])
def test_local_dataset_folder_goes_through_datasets(tmp_path, streaming):
    folder = tmp_path / "laion-like"
    folder.mkdir()
    _frame().write_parquet(folder / "train-00000.parquet")
    section = PromptsSection(source="dataset", dataset=str(folder), column="top_caption", count=7, streaming=streaming)
    assert [p.text for p in study_prompts(section)] == CAPTIONS[:7]
    shuffled = PromptsSection(
        source="dataset",
        dataset=str(folder),
        column="top_caption",
        count=7,
        streaming=streaming,
        shuffle=True,
        shuffle_seed=3,
        shuffle_buffer=64,
    )
    once, twice = ([p.text for p in study_prompts(shuffled)] for _ in range(2))
    assert once == twice and len(once) == 7 and set(once) <= set(CAPTIONS) and once != CAPTIONS[:7]


@pytest.mark.usefixtures("datasets_cache")
def test_local_dataset_folder_with_a_wrong_column_names_the_columns(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _frame().write_parquet(folder / "train.parquet")
    section = PromptsSection(source="dataset", dataset=str(folder), column="caption", count=3, streaming=False)
    with pytest.raises(ValueError, match=r"no column 'caption'; columns: id, top_caption"):
        study_prompts(section)


def test_hub_dataset_is_checked_without_a_download(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("check must not load the dataset")

    monkeypatch.setattr(prompt_sources, "_load_dataset", no_download)
    config = load_config(
        _config(tmp_path, 'source = "dataset"\ndataset = "laion/laion-coco"\ncolumn = "top_caption"\ncount = 1_500_000')
    )
    line = next(line for line in check_config(config) if line.startswith("prompts:"))
    assert "'laion/laion-coco'" in line and "'top_caption'" in line
    assert "not downloaded now" in line and "streamed at run time" in line


def test_hub_dataset_captions_are_kept_in_the_run_folder(tmp_path, monkeypatch):
    calls = []

    def fake_load(name, section):
        calls.append((name, section.count))
        return CAPTIONS[: section.count]

    monkeypatch.setattr(prompt_sources, "_load_dataset", fake_load)
    section = PromptsSection(source="dataset", dataset="laion/laion-coco", column="top_caption", count=5)
    run = tmp_path / "run"
    assert [p.text for p in study_prompts(section, cache=run)] == CAPTIONS[:5]
    assert [p.text for p in study_prompts(section, cache=run)] == CAPTIONS[:5]
    assert calls == [("laion/laion-coco", 5)]  # the second stage read the run folder
    assert json.loads((run / "prompts.json").read_text())["column"] == "top_caption"
    section.count = 6  # a changed section is read again, not served stale
    assert len(study_prompts(section, cache=run)) == 6 and calls[-1] == ("laion/laion-coco", 6)


BAD = [
    ('source = "dataset"\ncolumn = "top_caption"', r"prompts\.dataset: is required"),
    ('source = "dataset"\ndataset = "laion/laion-coco"', r"prompts\.column: is required .*top_caption"),
    (
        'source = "dataset"\ndataset = "captions.parquet"\ncolumn = "top_captoin"',
        r"prompts\.column: captions\.parquet has no column 'top_captoin'; did you mean 'top_caption'\?",
    ),
    (
        'source = "dataset"\ndataset = "missing.parquet"\ncolumn = "text"',
        r"prompts\.dataset: .*missing\.parquet does not exist",
    ),
    ('source = "dataset"\ndataset = "a/b/c"\ncolumn = "text"', r"is not a Hugging Face dataset id"),
    ('source = "file"\nfile = "captions.jsonl"', r"prompts\.column: is required to read captions from captions\.jsonl"),
    (
        'source = "dataset"\ndataset = "laion/laion-coco"\ncolumn = "x"\nstreaming = "yes"',
        r"prompts\.streaming: expected true or false",
    ),
    (
        'source = "dataset"\ndataset = "laion/laion-coco"\ncolumn = "x"\nshuffle_buffer = 0',
        r"prompts\.shuffle_buffer: must be > 0",
    ),
    ('source = "datasets"', r"prompts\.source: 'datasets' is not allowed; did you mean 'dataset'\?"),
]


@pytest.mark.parametrize("prompts,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_dataset_sources_name_the_key_and_the_fix(tmp_path, prompts, message):
    _write_tables(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, prompts))


@pytest.mark.parametrize("name", ["sdxl_turbo_saes.toml", "sdxl_transfer.toml", "flux_dictionaries.toml"])
def test_real_model_configs_name_laion_coco_captions(name):
    config = load_config(REPO / "configs" / name)
    assert (config.prompts.source, config.prompts.dataset, config.prompts.column) == (
        "dataset",
        "laion/laion-coco",
        "top_caption",
    )
    assert config.prompts.streaming and config.prompts.shuffle


def test_a_streamed_dataset_without_the_column_names_its_columns_at_the_first_row():
    with pytest.raises(ValueError, match=r"dataset 'd' has no column 'top_caption'; columns: url, TEXT"):
        prompt_sources._first_captions(iter([{"url": "u", "TEXT": "t"}]), 3, "d", "top_caption")
    rows = [{"c": " a "}, {"c": None}, {"c": ""}, {"c": "b"}, {"c": "c"}]
    assert prompt_sources._first_captions(iter(rows), 2, "d", "c") == ["a", "b"]
