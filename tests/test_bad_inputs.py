"""The bad-input catalogue: every case goes through the command line as a user would.

Each case must exit with status 2, print a message that names the problem and the fix
(checked by a pattern), and leave everything already written byte-identical.
"""
from __future__ import annotations

import hashlib
import re
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from studies.cli import main

from study_fixtures import write_tiny_study


def _tree_digest(root: Path, skip: set[Path] = frozenset()) -> dict[str, str]:
    """Path -> sha256 of every file under root (what 'nothing written is lost' compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p not in skip}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny study harvested and trained once; cases work on copies."""
    folder = tmp_path_factory.mktemp("trained")
    config = write_tiny_study(folder)
    assert main(["harvest", str(config), "--no-progress", "--device", "cpu"]) == 0
    assert main(["train", str(config), "--no-progress", "--device", "cpu"]) == 0
    return folder


def _copy_run(trained_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_run / "run", tmp_path / "run")
    return write_tiny_study(tmp_path)


# ---- config files -------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigCase:
    name: str
    replace: dict[str, str]
    message: str
    command: str = "check"


CONFIG_CASES = [
    ConfigCase("misspelt section", {"[harvest]": "[harvst]"}, r"harvst: unknown key; did you mean 'harvest'"),
    ConfigCase("misspelt key", {"n = 64\nk = 4": "nn = 64\nk = 4"}, r"dictionaries\[0\]\.nn: unknown key; did you mean 'n'"),
    ConfigCase("wrong type", {"batch_size = 6": 'batch_size = "6"'}, r"harvest\.batch_size: expected an integer, got str"),
    ConfigCase("k larger than n", {"n = 64\nk = 4": "n = 64\nk = 65"}, r"k=65 is larger than n=64; choose k <= n"),
    ConfigCase("negative size", {"n = 64\nk = 4": "n = -64\nk = 4"}, r"dictionaries\[0\]\.n: must be > 0, got -64"),
    ConfigCase("empty prompt list", {'source = "toyworld"': 'source = "list"\nlist = []'}, r"prompts\.list: is empty; give at least two prompts"),
    ConfigCase("missing prompts file", {'source = "toyworld"': 'source = "file"\nfile = "gone.txt"'}, r"gone\.txt does not exist; one prompt per line"),
    ConfigCase("unknown architecture", {'architecture = "itda"': 'architecture = "ica"'}, r"'ica' is not allowed.*Allowed: topk_sae, itda"),
    ConfigCase("unknown model id", {'id = "tiny/sdxl"\nsteps = 1': 'id = "stabilityai/sdxl-trubo"\nsteps = 1'}, r"unknown model 'stabilityai/sdxl-trubo'.*Known models"),
    ConfigCase("dictionary on an undefined model", {'model = "one"\nhook': 'model = "three"\nhook'}, r"'three' is not allowed.*Allowed: one, multi"),
    ConfigCase("hook the model lacks", {'hooks = ["down.2.1"]': 'hooks = ["down.2.1", "down.3.0"]'}, r"unknown hook 'down\.3\.0'.*Valid hooks: down\.1\.0"),
    ConfigCase("window outside [0, 1]", {'edits = ["colour", "background"]': 'edits = ["colour"]\nwindows = { early = [0.5, 2.0] }'}, r"\[0\.5, 2\.0\] must be \[low, high\] with 0 <= low <= high <= 1"),
    ConfigCase("invalid TOML", {"[harvest]": "[harvest"}, r"not valid TOML"),
    ConfigCase("eval fraction out of range", {"eval_fraction = 0.34": "eval_fraction = 0"}, r"must be strictly between 0 and 1"),
    ConfigCase("NF4 on an SDXL model", {'steps = 1\nguidance = 0.0': 'steps = 1\nguidance = 0.0\nquantize = "nf4"'}, r"quantize='nf4', which is supported for Flux models only"),
    ConfigCase("duplicate dictionary name", {'name = "itda"': 'name = "sae"'}, r"'sae' is used twice; names must be unique"),
    ConfigCase("fewer tokens than a batch", {"tokens = 4096\nbatch = 256\n\n[[dictionaries]]": "tokens = 100\nbatch = 256\n\n[[dictionaries]]"}, r"100 tokens are fewer than one batch \(256\)"),
    ConfigCase("study names an unknown dictionary", {'dictionaries = ["sae", "itda"]': 'dictionaries = ["sae", "sea"]'}, r"studies\.atlas\.dictionaries\[1\]: 'sea' is not allowed; did you mean 'sae'"),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.name for c in CONFIG_CASES])
def test_config_case(case, tmp_path, capsys):
    config = write_tiny_study(tmp_path, **case.replace)
    for command in ("check", "run"):
        assert main([command, str(config)]) == 2
        err = capsys.readouterr().err
        assert f"diffdict {command}: error:" in err
        assert re.search(case.message, err, re.S), err
    assert not (tmp_path / "run").exists()  # refused before anything was started


# ---- command-line arguments -----------------------------------------------------------------
CLI_CASES = [
    ("unknown model", ["hooks", "nobody/model"], r"unknown model 'nobody/model'.*Known models:.*tiny/flux"),
    ("unknown hook", ["generate", "tiny/sdxl", "a cat", "--hooks", "down.9.9"], r"unknown hook 'down\.9\.9'.*Valid hooks"),
    ("size off the hook grid", ["hooks", "tiny/sdxl", "--height", "60"], r"60x64 px is not a multiple of its stride 8 px"),
    ("zero steps", ["generate", "tiny/sdxl", "a cat", "--steps", "0"], r"steps must be >= 1, got 0"),
    ("config file missing", ["run", "no/such/config.toml"], r"config file no/such/config\.toml does not exist"),
    ("NF4 on SDXL", ["generate", "tiny/sdxl", "a cat", "--quantize", "nf4"], r"supported for Flux models only"),
]


@pytest.mark.parametrize("name,argv,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(name, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err, re.S)
    assert not any(tmp_path.iterdir())  # nothing written


def test_unknown_study_name(tmp_path, capsys):
    config = write_tiny_study(tmp_path)
    assert main(["study", str(config), "--only", "tranfser"]) == 2
    assert "unknown study ['tranfser']; studies: transfer, compare, windows, atlas" in capsys.readouterr().err


# ---- the store and dictionary files ---------------------------------------------------------
def _flip_byte(path: Path, at: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[-at] ^= 0xFF
    path.write_bytes(bytes(data))


def _shards(run: Path) -> list[Path]:
    # every shard: whichever one the study reads first must be caught
    return sorted((run / "stores" / "one" / "shards").glob("*.safetensors"))


def _sae_folder(run: Path) -> Path:
    return next((run / "fits").glob("one-4096-256-*")) / "sae"


def _corrupt_shard(run):
    for shard in _shards(run):
        _flip_byte(shard)
    return _shards(run)[0]


def _truncate_shard(run):
    for shard in _shards(run):
        os.truncate(shard, shard.stat().st_size // 2)
    return _shards(run)[0]


def _remove_shard(run):
    for shard in _shards(run):
        shard.unlink()
    return None


def _remove_weights(run):
    (_sae_folder(run) / "weights.safetensors").unlink()
    return None


def _pickle_weights(run):
    path = _sae_folder(run) / "weights.safetensors"
    torch.save({"W_dec": torch.zeros(3)}, path)
    return path


def _unknown_architecture(run):
    path = _sae_folder(run) / "config.json"
    path.write_text(path.read_text().replace('"topk_sae"', '"sparse_magic"'))
    return path


def _wrong_shape_weights(run):
    from safetensors.torch import load_file, save_file

    path = _sae_folder(run) / "weights.safetensors"
    tensors = load_file(str(path))
    tensors["W_dec"] = torch.zeros(64, 16)
    save_file(tensors, str(path))
    return path


def _dictionary_for_another_hook(run):
    import dictionaries.base as base

    folder = _sae_folder(run)
    shutil.rmtree(folder)
    base.create("topk_sae", d=16, n=32, k=4).save(folder)  # a d=16 dictionary where a d=32 one belongs
    return None


@dataclass(frozen=True)
class FileCase:
    name: str
    damage: Callable[[Path], Path | None]  # returns the damaged file (excluded from the unchanged check)
    message: str


FILE_CASES = [
    FileCase("corrupt shard", _corrupt_shard, r"corrupt activation shard .*job-\d+\.safetensors.*Delete this file and run the same"),
    FileCase("truncated shard", _truncate_shard, r"corrupt activation shard .*job-\d+\.safetensors"),
    FileCase("index row pointing nowhere", _remove_shard, r"job-\d+\.safetensors: the file is missing but the index lists it"),
    FileCase("missing dictionary weights", _remove_weights, r"weights\.safetensors is missing.*retrain it"),
    FileCase("pickle instead of safetensors", _pickle_weights, r"is a pickle / torch\.save file, not safetensors; diffdict never unpickles"),
    FileCase("unknown architecture in config.json", _unknown_architecture, r"config\.json: unknown dictionary architecture 'sparse_magic'"),
    FileCase("weights of the wrong shape", _wrong_shape_weights, r"tensor 'W_dec' has shape \(64, 16\) but the config says \(64, 32\)"),
    FileCase("dictionary built for another hook's d", _dictionary_for_another_hook, r"activations have d=32 but this dictionary was built for d=16"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.name for c in FILE_CASES])
def test_store_and_dictionary_case(case, trained_run, tmp_path, capsys):
    config = _copy_run(trained_run, tmp_path)
    run = tmp_path / "run"
    damaged = case.damage(run)
    before = _tree_digest(run)
    assert main(["study", str(config), "--only", "transfer", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(case.message, err, re.S), err
    after = _tree_digest(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing already written changed
    assert not (run / "tables" / "transfer_metrics.parquet").exists()  # and no half result appeared
    assert damaged is None or damaged.exists()


def test_catalogue_has_at_least_25_cases():
    assert len(CONFIG_CASES) + len(CLI_CASES) + 1 + len(FILE_CASES) >= 25
