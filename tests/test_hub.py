"""Dictionaries on the Hugging Face Hub, offline: `dictionaries.load("owner/repo", subfolder=...)` reads
a Hub cache laid out as huggingface_hub lays it out (HF_HUB_OFFLINE), and `diffdict push` stages the
dictionary with a model card and hands it to an injected upload function."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from diffdict import dictionaries
from diffdict.dictionaries import base, hub
from diffdict.studies import cli
from diffdict.studies.commands import push as push_command

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _trained_run(tmp_path: Path) -> Path:
    """A run folder as `diffdict train` leaves it: RUN/fits/GROUP/NAME, metrics, and the store's model id."""
    run = tmp_path / "run"
    sae = base.create("topk_sae", d=16, n=64, k=4, k_aux=8)
    sae.meta.update({"name": "turbo-sae", "hook": "down.2.1", "branch": "cond", "train_steps": 10})
    folder = run / "fits" / "turbo-4step-2048-128" / "turbo-sae"
    sae.save(folder, training_state=True)
    pl.DataFrame(
        [
            {
                "name": "turbo-sae",
                "kind": "train",
                "step": 10,
                "tokens": 1280,
                "fvu": 0.5,
                "l0": 4.0,
                "dead_fraction": None,
            },
            {
                "name": "turbo-sae",
                "kind": "eval",
                "step": 10,
                "tokens": 512,
                "fvu": 0.1234,
                "l0": 3.9,
                "dead_fraction": 0.25,
            },
        ]
    ).write_parquet(folder.parent / "metrics.parquet")
    (run / "stores" / "turbo-4step").mkdir(parents=True)
    (run / "stores" / "turbo-4step" / "store.json").write_text(json.dumps({"model": "toy/sdxl-turbo"}))
    return folder


def _hub_cache(tmp_path: Path, folder: Path, repo: str, subfolder: str | None) -> Path:
    """A Hub cache holding `folder` at `subfolder` of `repo` on main, as huggingface_hub stores it."""
    cache = tmp_path / "hub-cache"
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    target = snapshot / subfolder if subfolder else snapshot
    target.mkdir(parents=True)
    for name in (base.CONFIG_FILE, base.WEIGHTS_FILE):
        shutil.copy2(folder / name, target / name)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    return cache


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE in tmp_path (set on the constants huggingface_hub already read)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("subfolder", ["down.2.1/turbo-sae", None])
def test_load_from_the_hub_cache_offline(tmp_path, offline_hub, subfolder):
    folder = _trained_run(tmp_path)
    _hub_cache(tmp_path, folder, "someone/toy-saes", subfolder)
    loaded = dictionaries.load("someone/toy-saes", subfolder=subfolder)
    original = base.load(folder)
    assert loaded.architecture == "topk_sae" and loaded.meta["hook"] == "down.2.1"
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.decode(loaded.encode(x)), original.decode(original.encode(x)))


def test_load_from_the_hub_names_the_subfolders_when_none_is_given(tmp_path, offline_hub):
    _hub_cache(tmp_path, _trained_run(tmp_path), "someone/toy-saes", "turbo-sae")
    with pytest.raises(FileNotFoundError, match=r"dictionaries in this repo: turbo-sae \(pass subfolder=...\)"):
        dictionaries.load("someone/toy-saes")


def test_load_of_a_repo_missing_from_an_offline_cache_fails_clearly(tmp_path, offline_hub):
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError):
        dictionaries.load("someone/not-cached")


def test_local_folders_still_load_and_win_over_hub_ids(tmp_path, monkeypatch):
    folder = _trained_run(tmp_path)
    assert dictionaries.load(folder).meta["name"] == "turbo-sae"
    assert dictionaries.load(folder.parent, subfolder="turbo-sae").n == 64
    monkeypatch.chdir(folder.parent.parent)  # "turbo-4step-2048-128/turbo-sae" looks like owner/repo: the folder wins
    assert dictionaries.load("turbo-4step-2048-128/turbo-sae").k == 4
    assert not hub.is_hub_id("turbo-4step-2048-128/turbo-sae") and hub.is_hub_id("owner/repo")
    assert not hub.is_hub_id("a/b/c") and not hub.is_hub_id("./x")


def test_model_card_has_the_facts_a_reader_needs(tmp_path):
    card = hub.model_card(_trained_run(tmp_path), "someone/toy-saes", "turbo-sae")
    for fact in (
        "| architecture | topk_sae |",
        "| model | toy/sdxl-turbo |",
        "| hook | down.2.1 |",
        "| d (channels) | 16 |",
        "| n (atoms) | 64 |",
        "| k (active per token) | 4 |",
        "| training tokens | 1,280 |",
        "| held-out FVU | 0.1234 |",
        "| held-out L0 | 3.9 |",
        "| dead fraction | 25.0% |",
        "dictionaries.load('someone/toy-saes', subfolder='turbo-sae')",
        '"k_aux": 8',
    ):
        assert fact in card, fact


def test_push_command_stages_weights_and_card_for_the_upload(tmp_path, capsys):
    folder = _trained_run(tmp_path)
    sent = {}

    def fake_upload(folder, repo_id, path_in_repo, private, commit_message):
        sent.update(
            files=sorted(p.name for p in Path(folder).iterdir()),
            repo=repo_id,
            path=path_in_repo,
            private=private,
            message=commit_message,
            card=(Path(folder) / "README.md").read_text(),
        )
        return "https://huggingface.co/someone/toy-saes/commit/1"

    args = cli.build_parser().parse_args(
        ["push", str(folder), "someone/toy-saes", "--subfolder", "turbo-sae", "--private"]
    )
    assert push_command.run(args, upload=fake_upload) == 0
    assert sent["files"] == ["README.md", "config.json", "weights.safetensors"]  # never the optimiser state
    assert (sent["repo"], sent["path"], sent["private"]) == ("someone/toy-saes", "turbo-sae", True)
    assert sent["message"] == "diffdict: topk_sae turbo-sae"
    assert "| held-out FVU | 0.1234 |" in sent["card"]
    assert "pushed" in capsys.readouterr().out


def test_pushed_folder_loads_back_through_the_hub_cache(tmp_path, offline_hub):
    folder = _trained_run(tmp_path)
    staged = tmp_path / "staged"

    def keep(folder, repo_id, path_in_repo, private, commit_message):
        shutil.copytree(folder, staged)

    hub.push(folder, "someone/toy-saes", upload=keep)
    _hub_cache(tmp_path, staged, "someone/toy-saes", None)
    assert dictionaries.load("someone/toy-saes").meta["name"] == "turbo-sae"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["push", "nowhere/fits/x", "someone/repo"], r"nowhere/fits/x is not a folder"),
        (["push", "{folder}", "not a repo id"], r"'not a repo id' is not a Hub repo id"),
        (["push", "{run}", "someone/repo"], r"no saved dictionary at"),
    ],
)
def test_push_refuses_what_it_cannot_upload(tmp_path, capsys, argv, message):
    import re

    folder = _trained_run(tmp_path)
    argv = [a.format(folder=folder, run=folder.parent.parent) for a in argv]
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
