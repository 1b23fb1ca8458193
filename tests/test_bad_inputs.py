"""The bad-input catalogue: every case goes through the command line as a user would.

Each case must exit with status 2, print a message that names the problem and the fix
(checked by a pattern), and leave everything already written byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffdict.studies.cli import main
from study_fixtures import TINY_WINDOWS, write_tiny_study


def _tree_digest(root: Path, skip: Collection[Path] = frozenset()) -> dict[str, str]:
    """Path -> sha256 of every file under root (what 'nothing written is lost' compares)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p not in skip
    }


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
    ConfigCase(
        "misspelt key", {"n = 64\nk = 4": "nn = 64\nk = 4"}, r"dictionaries\[0\]\.nn: unknown key; did you mean 'n'"
    ),
    ConfigCase(
        "wrong type", {"batch_size = 6": 'batch_size = "6"'}, r"harvest\.batch_size: expected an integer, got str"
    ),
    ConfigCase("k larger than n", {"n = 64\nk = 4": "n = 64\nk = 65"}, r"k=65 is larger than n=64; choose k <= n"),
    ConfigCase("negative size", {"n = 64\nk = 4": "n = -64\nk = 4"}, r"dictionaries\[0\]\.n: must be > 0, got -64"),
    ConfigCase(
        "empty prompt list",
        {'source = "toyworld"': 'source = "list"\nlist = []'},
        r"prompts\.list: is empty; give at least two prompts",
    ),
    ConfigCase(
        "missing prompts file",
        {'source = "toyworld"': 'source = "file"\nfile = "gone.txt"'},
        r"gone\.txt does not exist; one prompt per line",
    ),
    ConfigCase(
        "unknown architecture",
        {'architecture = "itda"': 'architecture = "ica"'},
        r"'ica' is not allowed.*Allowed: topk_sae, itda",
    ),
    ConfigCase(
        "unknown model id",
        {'id = "tiny/sdxl"\nsteps = 1': 'id = "stabilityai/sdxl-trubo"\nsteps = 1'},
        r"unknown model 'stabilityai/sdxl-trubo'.*Known models",
    ),
    ConfigCase(
        "dictionary on an undefined model",
        {'model = "one"\nhook': 'model = "three"\nhook'},
        r"'three' is not allowed.*Allowed: one, multi",
    ),
    ConfigCase(
        "hook the model lacks",
        {'hooks = ["down.2.1"]': 'hooks = ["down.2.1", "down.3.0"]'},
        r"unknown hook 'down\.3\.0'.*Valid hooks: down\.1\.0",
    ),
    ConfigCase(
        "window outside [0, 1]",
        {TINY_WINDOWS: "windows = { early = [0.5, 2.0] }"},
        r"\[0\.5, 2\.0\] must be \[low, high\] with 0 <= low <= high <= 1",
    ),
    ConfigCase("invalid TOML", {"[harvest]": "[harvest"}, r"not valid TOML"),
    ConfigCase(
        "eval fraction out of range", {"eval_fraction = 0.34": "eval_fraction = 0"}, r"must be strictly between 0 and 1"
    ),
    ConfigCase(
        "NF4 on an SDXL model",
        {"steps = 1\nguidance = 0.0": 'steps = 1\nguidance = 0.0\nquantize = "nf4"'},
        r"quantize='nf4', which is supported for Flux models only",
    ),
    ConfigCase(
        "duplicate dictionary name", {'name = "itda"': 'name = "sae"'}, r"'sae' is used twice; names must be unique"
    ),
    ConfigCase(
        "fewer tokens than a batch",
        {"tokens = 4096\nbatch = 256\n\n[[dictionaries]]": "tokens = 100\nbatch = 256\n\n[[dictionaries]]"},
        r"100 tokens are fewer than one batch \(256\)",
    ),
    ConfigCase(
        "study names an unknown dictionary",
        {'dictionaries = ["sae", "itda"]': 'dictionaries = ["sae", "sea"]'},
        r"studies\.atlas\.dictionaries\[1\]: 'sea' is not allowed; did you mean 'sae'",
    ),
    ConfigCase(
        "misspelt study",
        {"[studies.training]": "[studies.trainig]"},
        r"studies\.trainig: unknown study; did you mean 'training'\?; the registered studies are: transfer, compare, "
        r"windows, editability, layout, training, atlas",
    ),
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
    (
        "unknown hook",
        ["generate", "tiny/sdxl", "a cat", "--hooks", "down.9.9"],
        r"unknown hook 'down\.9\.9'.*Valid hooks",
    ),
    (
        "size off the hook grid",
        ["hooks", "tiny/sdxl", "--height", "60"],
        r"60x64 px is not a multiple of its stride 8 px",
    ),
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
    assert re.search(
        r"unknown study \['tranfser'\]; studies: transfer, compare, windows, .*atlas", capsys.readouterr().err
    )


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
    import json

    import diffdict.dictionaries.base as base

    folder = _sae_folder(run)
    recorded = json.loads((folder / "config.json").read_text())["meta"]["settings_hash"]
    shutil.rmtree(folder)
    foreign = base.create("topk_sae", d=16, n=32, k=4)  # a d=16 dictionary where a d=32 one belongs,
    foreign.meta["settings_hash"] = recorded  # claiming the right settings: only its shapes give it away
    foreign.save(folder)
    return None


@dataclass(frozen=True)
class FileCase:
    name: str
    damage: Callable[[Path], Path | None]  # returns the damaged file (excluded from the unchanged check)
    message: str


FILE_CASES = [
    FileCase(
        "corrupt shard",
        _corrupt_shard,
        r"corrupt activation shard .*job-\d+\.safetensors.*Delete this file and run the same",
    ),
    FileCase("truncated shard", _truncate_shard, r"corrupt activation shard .*job-\d+\.safetensors"),
    FileCase(
        "index row pointing nowhere", _remove_shard, r"job-\d+\.safetensors: the file is missing but the index lists it"
    ),
    FileCase("missing dictionary weights", _remove_weights, r"weights\.safetensors is missing.*retrain it"),
    FileCase(
        "pickle instead of safetensors",
        _pickle_weights,
        r"is a pickle / torch\.save file, not safetensors; diffdict never unpickles",
    ),
    FileCase(
        "unknown architecture in config.json",
        _unknown_architecture,
        r"config\.json: unknown dictionary architecture 'sparse_magic'",
    ),
    FileCase(
        "weights of the wrong shape",
        _wrong_shape_weights,
        r"tensor 'W_dec' has shape \(64, 16\) but the config says \(64, 32\)",
    ),
    FileCase(
        "dictionary built for another hook's d",
        _dictionary_for_another_hook,
        r"activations have d=32 but this dictionary was built for d=16",
    ),
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


# ==== issue 23: hardening ====================================================================
# Config cases with a setup step (a file where the run folder belongs, a binary prompts file...):
# each exits 2 from `check` and `run`, and nothing under the test's folder changes.
def _write(name: str, data: bytes | str):
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _mkdir(name: str):
    return lambda folder: (folder / name).mkdir(parents=True)


@dataclass(frozen=True)
class HardCase:
    name: str
    replace: dict[str, str]
    message: str
    setup: Callable[[Path], None] | None = None


_ATLAS = "[studies.atlas]"
_WINDOWS_EDITS = 'edits = ["colour", "background"]'
_SAE = 'name = "sae"\narchitecture = "topk_sae"'
HARD_CASES = [
    HardCase(
        "dictionary name climbs out of the run",
        {'name = "itda"': 'name = "../../../victim"', '"sae", "itda"': '"sae", "../../../victim"'},
        r"dictionaries\[1\]\.name: '\.\./\.\./\.\./victim' is not a safe name.*no '/', no '\.\.'",
    ),
    HardCase(
        "model name climbs out of the run",
        {'name = "multi"': 'name = "../../../x"'},
        r"models\[1\]\.name: '\.\./\.\./\.\./x' is not a safe name",
    ),
    HardCase(
        "run name with a slash", {'name = "tiny"': 'name = "a/b"'}, r"name: 'a/b' is not a safe name.*e\.g\. 'a-b'"
    ),
    HardCase(
        "absolute dictionary name",
        {'name = "itda"': 'name = "/etc/passwd"', '"sae", "itda"': '"sae", "/etc/passwd"'},
        r"'/etc/passwd' is not a safe name",
    ),
    HardCase("empty out", {'out = "': 'out = ""\n# was "'}, r"out: is empty; give the folder that receives the run"),
    HardCase(
        "out is an existing file",
        {},
        r"out: .*run is a file, not a folder; choose another `out`",
        _write("run", "not a folder"),
    ),
    HardCase(
        "out below a file",
        {'/run"': '/blocker/run"'},
        r"blocker is a file, so .*run cannot be created",
        _write("blocker", "x"),
    ),
    HardCase(
        "options.lr is a word",
        {_SAE: _SAE + '\noptions = { lr = "fast" }'},
        r"dictionaries\[0\]\.options\.lr: expected a number, got str 'fast'",
    ),
    HardCase(
        "options.dead_tokens is a word",
        {_SAE: _SAE + '\noptions = { dead_tokens = "soon" }'},
        r"options\.dead_tokens: expected an integer, got str 'soon'",
    ),
    HardCase(
        "options misspelt",
        {_SAE: _SAE + "\noptions = { lrr = 0.001 }"},
        r"options\.lrr: unknown option for topk_sae; did you mean 'lr'",
    ),
    HardCase(
        "options.lr negative",
        {_SAE: _SAE + "\noptions = { lr = -0.1 }"},
        r"options\.lr: -0\.1 is out of range; allowed: \(0\.0, inf\]",
    ),
    HardCase(
        "options.beta2 of 1",
        {_SAE: _SAE + "\noptions = { beta2 = 1.0 }"},
        r"options\.beta2: 1\.0 is out of range; allowed: \[0\.0, 1\.0\)",
    ),
    HardCase(
        "options repeats n",
        {_SAE: _SAE + "\noptions = { n = 128 }"},
        r"options\.n: is not an option here: set `n` on the entry",
    ),
    HardCase(
        "options.lr is nan",
        {_SAE: _SAE + "\noptions = { lr = nan }"},
        r"options\.lr: is nan, but every number must be finite",
    ),
    HardCase(
        "dictionary too large for memory",
        {"n = 64\nk = 4": "n = 9_000_000_000_000\nk = 4"},
        r"dictionaries\[0\]\.n: n=9,000,000,000,000 at d=32 needs about .* PB to train .* lower n",
    ),
    HardCase(
        "device is not a device",
        {'clip_model = "random"': 'clip_model = "random"\ndevice = "banana"'},
        r"device: 'banana' is not a device diffdict runs on; use cpu, cuda",
    ),
    HardCase(
        "guidance nan",
        {"guidance = 5.0": "guidance = nan"},
        r"models\.guidance|models\[1\]\.guidance: is nan, but every number must be finite",
    ),
    HardCase(
        "guidance inf",
        {"guidance = 5.0": "guidance = inf"},
        r"models\[1\]\.guidance: is inf, but every number must be finite",
    ),
    HardCase(
        "guidance negative", {"guidance = 5.0": "guidance = -2.0"}, r"models\[1\]\.guidance: must be >= 0, got -2\.0"
    ),
    HardCase(
        "steps beyond the scheduler",
        {"steps = 2": "steps = 5000"},
        r"models\[1\]\.steps: 5000 steps is more than the scheduler's 1000",
    ),
    HardCase(
        "configured size off the hook grid",
        {"steps = 1\nguidance = 0.0": "steps = 1\nguidance = 0.0\nheight = 60"},
        r"models\[0\]\.height/width: hook 'down\.2\.1': image size 60x64 px is not a multiple of its stride 8 px",
    ),
    HardCase(
        "windows strength nan",
        {_WINDOWS_EDITS: _WINDOWS_EDITS + "\nstrength = nan"},
        r"studies\.windows\.strength: is nan, but every number must be finite",
    ),
    HardCase(
        "windows strength inf",
        {_WINDOWS_EDITS: _WINDOWS_EDITS + "\nstrength = inf"},
        r"studies\.windows\.strength: is inf",
    ),
    HardCase(
        "windows strength -1e300",
        {_WINDOWS_EDITS: _WINDOWS_EDITS + "\nstrength = -1e300"},
        r"studies\.windows\.strength: must be > 0, got -1e\+300.*steers away",
    ),
    HardCase(
        "norm strength zero",
        {_WINDOWS_EDITS: _WINDOWS_EDITS + "\nnorm_strength = 0.0"},
        r"studies\.windows\.norm_strength: must be > 0, got 0\.0",
    ),
    HardCase(
        "zero-length window",
        {TINY_WINDOWS: "windows = { early = [0.5, 0.5] }"},
        r"studies\.windows\.windows\.early: \[0\.5, 0\.5\] is an empty time window \(low == high\).*give low < high",
    ),
    HardCase(
        "no windows", {TINY_WINDOWS: "windows = {}"}, r"studies\.windows\.windows: is empty; give at least one window"
    ),
    HardCase(
        "window name climbs out",
        {TINY_WINDOWS: 'windows = { "../x" = [0.2, 0.5] }'},
        r"windows\.\.\./x: '\.\./x' is not a safe name",
    ),
    HardCase(
        "one-prompt list",
        {'source = "toyworld"': 'source = "list"\nlist = ["a red circle"]'},
        r"prompts\.list: has 1 distinct prompt \(of 1 used\).*at least 2 different prompts",
    ),
    HardCase(
        "the same prompt twice",
        {'source = "toyworld"': 'source = "list"\nlist = ["a red circle", "a red circle"]'},
        r"prompts\.list: has 1 distinct prompt \(of 2 used\)",
    ),
    HardCase(
        "one toy prompt", {"count = 12": "count = 1"}, r"prompts\.count: is 1, but train and eval are split by prompt"
    ),
    HardCase(
        "prompts file is a folder",
        {'source = "toyworld"': 'source = "file"\nfile = "prompts"'},
        r"prompts\.file: .*prompts is a folder; give a text file",
        _mkdir("prompts"),
    ),
    HardCase(
        "prompts file is binary",
        {'source = "toyworld"': 'source = "file"\nfile = "p.txt"'},
        r"prompts\.file: .*p\.txt is not UTF-8 text.*save it as UTF-8",
        _write("p.txt", b"\xf0\x28\x8c\x28 cat\n\xff dog\n"),
    ),
    HardCase(
        "repeated seed",
        {"eval_fraction = 0.34": "eval_fraction = 0.34\nseeds = [0, 0]"},
        r"prompts\.seeds: \[0, 0\] repeats a seed",
    ),
    HardCase(
        "negative seed",
        {'clip_model = "random"': 'clip_model = "random"\nseed = -1'},
        r"seed: -1 is out of range; seeds are integers from 0 to 2\*\*63 - 1",
    ),
    HardCase(
        "eval fraction nan",
        {"eval_fraction = 0.34": "eval_fraction = nan"},
        r"prompts\.eval_fraction: is nan, but every number must be finite",
    ),
]


@pytest.mark.parametrize("case", HARD_CASES, ids=[c.name for c in HARD_CASES])
def test_hardening_config_case(case, tmp_path, capsys):
    root = tmp_path / "root"  # the only folder the case may touch; its parent must stay empty of new files
    root.mkdir()
    if case.setup:
        case.setup(root)
    config = write_tiny_study(root, **case.replace)
    before = _tree_digest(tmp_path)
    for command in ("check", "run"):
        assert main([command, str(config), *(["--device", "cpu"] if command == "run" else [])]) == 2
        err = capsys.readouterr().err
        assert f"diffdict {command}: error:" in err and "Traceback" not in err
        assert re.search(case.message, err, re.S), err
    assert _tree_digest(tmp_path) == before  # nothing written, nothing removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_hostile_names_write_nothing_outside_the_run_and_keep_a_victim(tmp_path, capsys):
    """The reported data loss: a dictionary named ../../../victim replaced a user's folder."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    config = write_tiny_study(
        root, **{'name = "itda"': 'name = "../../../victim"', '"sae", "itda"': '"sae", "../../../victim"'}
    )
    before = _tree_digest(tmp_path)
    assert main(["run", str(config), "--no-progress", "--device", "cpu"]) == 2
    assert "is not a safe name" in capsys.readouterr().err
    assert _tree_digest(tmp_path) == before and (victim / "precious.txt").read_text() == "keep me"


def test_run_paths_never_leave_the_run_folder(tmp_path):
    """The backstop behind the name check: a path built from an unchecked name is refused."""
    from diffdict.studies.config import load_config
    from diffdict.studies.errors import UserError
    from diffdict.studies.run import Run

    config = load_config(write_tiny_study(tmp_path))
    config.models[0].name = "../../outside"  # as if validation had been bypassed
    with pytest.raises(UserError, match="is outside the run folder"):
        Run(config).store_dir("../../outside")


# ---- command-line arguments and the config path ---------------------------------------------------------
HARD_CLI_CASES = [
    (
        "guidance nan",
        ["generate", "tiny/sdxl", "a cat", "--guidance", "nan"],
        r"--guidance must be a finite number >= 0 \(0 turns guidance off\), got nan",
    ),
    (
        "guidance inf",
        ["generate", "tiny/sdxl", "a cat", "--guidance", "inf"],
        r"--guidance must be a finite number >= 0.*got inf",
    ),
    (
        "guidance negative",
        ["generate", "tiny/sdxl", "a cat", "--guidance", "-1"],
        r"--guidance must be a finite number >= 0.*got -1\.0",
    ),
    (
        "device banana",
        ["generate", "tiny/sdxl", "a cat", "--device", "banana"],
        r"--device: 'banana' is not a device diffdict runs on",
    ),
    ("config path is a folder", ["check", "."], r"config file \. is a folder; give the path of a \.toml file"),
    (
        "negative seed",
        ["generate", "tiny/sdxl", "a cat", "--seed", "-3"],
        r"--seed must be from 0 to 2\*\*63 - 1, got -3",
    ),
]


@pytest.mark.parametrize("name,argv,message", HARD_CLI_CASES, ids=[c[0] for c in HARD_CLI_CASES])
def test_hardening_cli_case(name, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err, re.S)
    assert not any(tmp_path.iterdir())


def test_binary_config_file_names_the_file(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_bytes(b"\xf0\x9f\x98\x80\xff\xfe name = 1")
    assert main(["check", str(config)]) == 2
    assert re.search(r"study\.toml: not a text file .*a config is UTF-8 TOML text", capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(tmp_path, capsys):
    config = write_tiny_study(tmp_path)
    assert main(["harvest", str(config), "--device", "cuda", "--no-progress"]) == 2
    assert re.search(
        r"--device: 'cuda' asks for a CUDA GPU, but none is available.*use --device cpu", capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_out_not_writable_is_one_message(tmp_path, capsys, monkeypatch):
    """A read-only or forbidden `out` (patched: the tests may run as root, who may write anywhere)."""
    import errno
    import pathlib

    config = write_tiny_study(tmp_path)
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "run")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert main(["report", str(config), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"run: Read-only file system; the file system is read-only: choose an `out` on a writable disk", err
    ), err


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only the project's own errors (and file-system / encoding errors) become exit 2."""
    from diffdict.studies import check as check_module

    def broken(config, device=None):
        raise ValueError("an internal mistake")  # a plain ValueError is not a user error any more

    monkeypatch.setattr(check_module, "check_and_cost", broken)
    with pytest.raises(ValueError, match="an internal mistake"):
        main(["check", str(write_tiny_study(tmp_path))])


# ---- the run folder: lock, changed settings, disk full, duplicate rows ------------------------------------
def test_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    import json
    import socket
    import subprocess

    config = write_tiny_study(tmp_path)
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / "run" / ".diffdict.lock"
        lock.write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "command": "diffdict run study.toml",
                }
            )
        )
        assert main(["report", str(config), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert re.search(rf"run is in use by `diffdict run study\.toml` \(pid {holder.pid} on this host", err), err
        assert lock.exists()  # the holder's lock is left alone
        lock.write_text(json.dumps({"pid": 123, "host": "elsewhere", "started": "now", "command": "diffdict run"}))
        assert main(["report", str(config), "--device", "cpu"]) == 2
        assert re.search(r"pid 123 on host elsewhere.*delete .*\.diffdict\.lock", capsys.readouterr().err, re.S)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a note, and released at the end
    lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now", "command": "x"}))
    assert main(["report", str(config), "--device", "cpu"]) == 0
    assert "removing the stale lock" in capsys.readouterr().out
    assert not lock.exists()


def _fake_records(prompts: list[str], value: float = 1.0):
    from diffdict.dictionaries.store import MapRecord

    return [
        MapRecord(
            {
                "hook": "h",
                "prompt_id": i,
                "prompt": text,
                "seed": 0,
                "step": 0,
                "timestep": 999.0,
                "t": 1.0,
                "branch": "cond",
            },
            torch.full((2, 2, 4), value + i),
        )
        for i, text in enumerate(prompts)
    ]


def test_store_with_other_settings_never_blocks_the_fix(tmp_path, capsys):
    from diffdict.dictionaries.errors import InputError
    from diffdict.dictionaries.store import StoreWriter

    root = tmp_path / "store"
    StoreWriter(root, "m", "fp32", settings={"height": 60})  # a run that failed before its first shard
    StoreWriter(root, "m", "fp32", settings={"height": 64})  # the corrected config: a fresh store, with a note
    assert "height: 60 -> 64" in capsys.readouterr().out
    writer = StoreWriter(root, "m", "fp32", settings={"height": 64})
    writer.write_shard("job-000000", _fake_records(["a", "b"]))
    with pytest.raises(
        InputError, match=r"holds 1 shard\(s\) harvested with other settings \(steps: None -> 4\).*--force"
    ):
        StoreWriter(root, "m", "fp32", settings={"height": 64, "steps": 4})
    StoreWriter(root, "m", "fp32", settings={"height": 64, "steps": 4}, replace=True)  # --force
    assert not list((root / "shards").glob("*.safetensors"))


def test_disk_full_stops_with_a_message_and_resumes(tmp_path, monkeypatch):
    import errno

    import diffdict.dictionaries.store as store_module
    from diffdict.dictionaries.errors import DiskFullError
    from diffdict.dictionaries.store import StoreWriter
    from diffdict.studies.errors import user_message

    real = store_module.save_file
    writer = StoreWriter(tmp_path / "store", "m", "fp32")
    writer.write_shard("job-000000", _fake_records(["a", "b"]))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "save_file", full)
    with pytest.raises(DiskFullError) as caught:
        writer.write_shard("job-000001", _fake_records(["c", "d"]))
    assert re.search(
        r"no space left to write shard .*job-000001\.safetensors .*run the same command again to resume",
        user_message(caught.value) or "",
    )
    assert not [p for p in (tmp_path / "store" / "shards").iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(store_module, "save_file", real)  # space again: the same writer resumes
    resumed = StoreWriter(tmp_path / "store", "m", "fp32")
    assert resumed.has_shard("job-000000") and not resumed.has_shard("job-000001")
    resumed.write_shard("job-000001", _fake_records(["c", "d"]))
    assert resumed.finalize().height == 4


def test_split_by_prompt_text_never_leaks_a_caption(tmp_path):
    from diffdict.dictionaries.store import StoreWriter
    from diffdict.dictionaries.store_reader import ActivationStore

    texts = ["a", "b", "c", "a", "b", "c", "d", "a"]  # more prompts than distinct captions
    writer = StoreWriter(tmp_path / "store", "m", "fp32")
    writer.write_shard("job-000000", _fake_records(texts))
    writer.finalize()
    store = ActivationStore(tmp_path / "store")
    for seed in range(5):
        held_out = store.eval_prompts(0.34, split_seed=seed)
        eval_texts = {texts[i] for i in held_out}
        train_texts = {texts[i] for i in range(len(texts)) if i not in held_out}
        assert eval_texts and train_texts and not eval_texts & train_texts


def _duplicate_index_row(run):
    import polars as pl

    path = run / "stores" / "one" / "index.parquet"
    index = pl.read_parquet(path)
    pl.concat([index, index.head(1)]).write_parquet(path)
    return path


def _changed_store_settings(run):
    """The config changed after the store was harvested: its studies must not read that store."""
    import json

    path = run / "stores" / "one" / "store.json"
    meta = json.loads(path.read_text())
    meta["settings"]["steps"] = 7
    path.write_text(json.dumps(meta))
    return path


FILE_CASES_23 = [
    FileCase(
        "store harvested with other settings",
        _changed_store_settings,
        r"stores/one was harvested with other settings than the config's \(steps: 7 -> 1\); "
        r"run `diffdict harvest .*--force`",
    ),
    FileCase(
        "duplicate index row",
        _duplicate_index_row,
        r"index\.parquet: 1 row\(s\) list a map a second time.*delete .*index\.parquet and run the same "
        r"`diffdict harvest CONFIG` again",
    ),
]


@pytest.mark.parametrize("case", FILE_CASES_23, ids=[c.name for c in FILE_CASES_23])
def test_store_case_23(case, trained_run, tmp_path, capsys):
    test_store_and_dictionary_case(case, trained_run, tmp_path, capsys)


def test_force_reharvests_a_store_of_other_settings(trained_run, tmp_path, capsys):
    """The fix the refusal names works: `harvest --force` replaces the store, and studies read it."""
    from diffdict.studies.config import load_config
    from diffdict.studies.run import Run

    _copy_run(trained_run, tmp_path)
    changed = write_tiny_study(tmp_path, **{"steps = 1\nguidance = 0.0": "steps = 2\nguidance = 0.0"})
    assert main(["harvest", str(changed), "--no-progress", "--device", "cpu"]) == 2
    assert re.search(
        r"holds \d+ shard\(s\) harvested with other settings \(steps: 1 -> 2\).*--force", capsys.readouterr().err
    )
    assert main(["harvest", str(changed), "--no-progress", "--device", "cpu", "--force"]) == 0
    assert "deleting its" in capsys.readouterr().out
    store = Run(load_config(changed)).store("one")  # no longer refused
    assert sorted(store.index["step"].unique().to_list()) == [0, 1]


def test_changed_n_and_k_retrain_instead_of_reusing_the_old_fit(trained_run, tmp_path, capsys):
    """A fit is keyed by its settings: after n and k change the old dictionary is never read (the same folder
    holds the retrained one: a dictionary saves the hash of its own settings)."""
    from diffdict.studies.config import load_config
    from diffdict.studies.run import Run

    config = _copy_run(trained_run, tmp_path)
    old = Run(load_config(config)).dictionary_dir("sae")
    assert (old / "config.json").exists()
    first_sae = "n = 64\nk = 4\ntokens = 4096\nbatch = 256\n\n[[dictionaries]]"
    changed = write_tiny_study(tmp_path, **{first_sae: first_sae.replace("n = 64\nk = 4", "n = 32\nk = 2")})
    new = Run(load_config(changed)).dictionary_dir("sae")
    assert not Run(load_config(changed)).is_trained(load_config(changed).dictionary("sae"))
    assert main(["study", str(changed), "--only", "transfer", "--no-progress", "--device", "cpu"]) == 2
    assert re.search(
        r"dictionary 'sae' .*trained with other settings .*run `diffdict train` first", capsys.readouterr().err
    )
    assert main(["train", str(changed), "--no-progress", "--device", "cpu"]) == 0  # the advice works
    assert "sae: topk_sae n=32 k=2" in capsys.readouterr().out
    import json

    assert json.loads((new / "config.json").read_text())["config"]["n"] == 32


def test_retrain_advice_works(trained_run, tmp_path, capsys):
    """'weights.safetensors is missing ... retrain it (`diffdict train CONFIG` ...)': that command restores it."""
    config = _copy_run(trained_run, tmp_path)
    weights = _sae_folder(tmp_path / "run") / "weights.safetensors"
    expected = weights.read_bytes()
    _remove_weights(tmp_path / "run")
    assert main(["study", str(config), "--only", "transfer", "--no-progress", "--device", "cpu"]) == 2
    assert "retrain it (`diffdict train CONFIG`" in capsys.readouterr().err
    assert main(["train", str(config), "--no-progress", "--device", "cpu"]) == 0
    from safetensors.torch import load

    before, after = load(expected), load(weights.read_bytes())
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)


def test_interventions_refuse_non_finite_numbers():
    from diffdict.adapters import AddDirection
    from diffdict.adapters.errors import AdapterInputError

    with pytest.raises(AdapterInputError, match="direction has non-finite values"):
        AddDirection("down.2.1", direction=torch.tensor([1.0, float("nan")]))
    with pytest.raises(AdapterInputError, match="strength nan is not finite"):
        AddDirection("down.2.1", direction=torch.ones(2), strength=float("nan"))
    with pytest.raises(AdapterInputError, match="the mask has non-finite values"):
        AddDirection("down.2.1", direction=torch.ones(2), mask=torch.full((2, 2), float("nan")))


def test_catalogue_has_at_least_63_cases():
    issue_23 = len(HARD_CASES) + len(HARD_CLI_CASES) + len(FILE_CASES_23) + 11  # + the named tests above
    assert issue_23 >= 30
    assert len(CONFIG_CASES) + len(CLI_CASES) + 1 + len(FILE_CASES) + issue_23 >= 63


# ---- kill -9 during the studies and the report of `diffdict run` ------------------------------------------
# (A kill during harvest and train is tested on real processes in test_scale_harvest.py / test_scale_train.py.)
_ONLY_TRANSFER_AND_ATLAS = {
    '[studies.compare]\npairs = [["sae", "itda"]]\nprompts = 4\n': "",
    '[studies.windows]\ndictionaries = ["sae"]\nprompts = 2\nedits = ["colour", "background"]\n'
    'edit_styles = ["sdlens", "tinaz_spatial", "tinaz_global", "flux_add"]\n' + TINY_WINDOWS + "\n": "",
}


def _tables(run: Path) -> dict:
    """Every table, timings dropped and the run folder's own path (atlas tiles name files) made relative."""
    import polars as pl

    tables = {}
    for path in sorted((run / "tables").glob("*.parquet")):
        table = pl.read_parquet(path)
        table = table.drop([c for c in table.columns if "seconds" in c])
        tables[path.name] = table.with_columns(pl.col(pl.Utf8).str.replace(str(run), "RUN", literal=True))
    return tables


def _kill_when(command: list[str], ready: Callable[[], bool], extra_delay: float, timeout: float = 300) -> bool:
    """Start `command`, SIGKILL it `extra_delay` s after `ready()` turns true; True if it was killed mid-run."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "diffdict", *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    began = time.monotonic()
    try:
        while not ready() and process.poll() is None and time.monotonic() - began < timeout:
            time.sleep(0.05)
        time.sleep(extra_delay)
        if process.poll() is not None:
            return False
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def uninterrupted_tables(trained_run, tmp_path_factory):
    """The tables of one uninterrupted `diffdict run` (transfer and atlas) from the trained run."""
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(trained_run / "run", reference / "run")
    write_tiny_study(reference, **_ONLY_TRANSFER_AND_ATLAS)
    assert main(["run", str(reference / "study.toml"), "--no-progress", "--device", "cpu"]) == 0
    return _tables(reference / "run")


@pytest.mark.parametrize("moment", ["first table written", "soon after start"])
def test_run_killed_in_studies_or_report_resumes_to_the_same_tables(
    moment, trained_run, uninterrupted_tables, tmp_path
):
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copytree(trained_run / "run", killed / "run")
    write_tiny_study(killed, **_ONLY_TRANSFER_AND_ATLAS)
    if moment == "first table written":
        ready = lambda: any((killed / "run" / "tables").glob("*.parquet"))  # noqa: E731
    else:
        ready = lambda: (killed / "run" / ".diffdict.lock").exists()  # noqa: E731
    was_killed = _kill_when(["run", str(killed / "study.toml"), "--no-progress", "--device", "cpu"], ready, 0.5)
    lock = killed / "run" / ".diffdict.lock"
    assert was_killed and lock.exists()  # a kill -9 mid-run leaves its lock behind ...
    assert main(["run", str(killed / "study.toml"), "--no-progress", "--device", "cpu"]) == 0  # ... which is stale
    assert not lock.exists()
    assert not [p for p in (killed / "run").rglob("*") if ".tmp" in p.name]
    expected, resumed = uninterrupted_tables, _tables(killed / "run")
    assert sorted(expected) == sorted(resumed)
    for name, table in expected.items():
        assert table.equals(resumed[name]), name
    assert (killed / "run" / "report.html").exists()


# ==== issue 31: damaged run files, read through one guarded reader ==========================================
# A file the framework reads back from a run folder that is truncated or foreign exits 2 naming the file, what
# is wrong and a safe fix (rebuild from what is intact, rerun the stage that writes it), and the fix works.
def _truncate(path: Path) -> Path:
    os.truncate(path, path.stat().st_size // 2)
    return path


def _truncate_index(run):
    return _truncate(run / "stores" / "one" / "index.parquet")


def _store_json_not_json(run):
    path = run / "stores" / "one" / "store.json"
    path.write_text('{"format_version": 1, "model": "tiny/sdxl", "dty')  # cut off mid-write
    return path


def _store_json_foreign(run):
    path = run / "stores" / "one" / "store.json"
    path.write_text('["not", "a", "store"]')
    return path


FILE_CASES_31 = [
    FileCase(
        "truncated index.parquet",
        _truncate_index,
        r"stores/one/index\.parquet: damaged or not a store index \(parquet: .*the index is rebuilt from the "
        r"shard headers: delete .*index\.parquet and run the same `diffdict harvest CONFIG` again \(the shards "
        r"are kept",
    ),
    FileCase(
        "store.json not JSON",
        _store_json_not_json,
        r"stores/one/store\.json: damaged or not a store's settings \(store\.json\) \(.*\); if this store was "
        r"harvested with the config, delete .*store\.json and run the same `diffdict harvest CONFIG` again: it "
        r"records the settings anew and keeps the shards",
    ),
    FileCase(
        "store.json holds a JSON list",
        _store_json_foreign,
        r"store\.json: damaged or not a store's settings \(store\.json\) \(a JSON list where a JSON object "
        r"belongs\)",
    ),
]


@pytest.mark.parametrize("case", FILE_CASES_31, ids=[c.name for c in FILE_CASES_31])
def test_damaged_store_file_case(case, trained_run, tmp_path, capsys):
    test_store_and_dictionary_case(case, trained_run, tmp_path, capsys)


def _shard_digests(run: Path) -> dict[str, str]:
    return _tree_digest(run / "stores" / "one" / "shards")


def test_a_truncated_index_is_rebuilt_from_the_shards_by_the_advised_harvest(trained_run, tmp_path, capsys):
    import polars as pl

    config = _copy_run(trained_run, tmp_path)
    index = tmp_path / "run" / "stores" / "one" / "index.parquet"
    original, shards = pl.read_parquet(index), _shard_digests(tmp_path / "run")
    _truncate(index)
    index.unlink()  # the advice: delete it and harvest again
    assert main(["harvest", str(config), "--no-progress", "--device", "cpu"]) == 0
    assert pl.read_parquet(index).equals(original) and _shard_digests(tmp_path / "run") == shards


def test_a_damaged_store_json_is_never_called_other_settings(trained_run, tmp_path, capsys):
    """`harvest` used to say "other settings" and advise --force, which deletes the good shards."""
    config = _copy_run(trained_run, tmp_path)
    run = tmp_path / "run"
    meta = run / "stores" / "one" / "store.json"
    expected, shards = meta.read_text(), _shard_digests(run)
    _store_json_not_json(run)
    assert main(["harvest", str(config), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"store\.json: damaged or not a store's settings .*the settings its \d+ shard\(s\) were harvested "
        r"with cannot be checked against the config\. If they were harvested with this config, delete "
        r".*store\.json and run the same `diffdict harvest CONFIG` again: it records the settings anew "
        r"and keeps the shards",
        err,
    ), err
    assert "other settings" not in err and _shard_digests(run) == shards
    meta.unlink()  # the advice
    assert main(["harvest", str(config), "--no-progress", "--device", "cpu"]) == 0
    assert _shard_digests(run) == shards
    import json

    assert json.loads(meta.read_text()) == json.loads(expected)


def test_a_truncated_table_names_the_study_to_compute_again(trained_run, tmp_path, capsys):
    config = _copy_run(trained_run, tmp_path)
    table = tmp_path / "run" / "tables" / "training_summary.parquet"
    assert main(["study", str(config), "--only", "training", "--no-progress", "--device", "cpu"]) == 0
    _truncate(table)
    before = _tree_digest(tmp_path / "run")
    for command in (["study", "--only", "training"], ["report"]):
        assert main([command[0], str(config), *command[1:], "--no-progress", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert re.search(
            r"tables/training_summary\.parquet: damaged or not a study table \(parquet: .*\); compute it "
            r"again with `diffdict study .*study\.toml --only training --force`, which replaces that "
            r"study's tables and keeps the others",
            err,
        ), err
    after = _tree_digest(tmp_path / "run")
    assert {k: v for k, v in after.items() if k in before} == before
    assert main(["study", str(config), "--only", "training", "--force", "--no-progress", "--device", "cpu"]) == 0
    import polars as pl

    assert pl.read_parquet(table).height == 2  # the advice works: one row per dictionary again


def test_a_truncated_metrics_table_is_reassembled_by_the_advised_train(trained_run, tmp_path, capsys):
    import polars as pl

    config = _copy_run(trained_run, tmp_path)
    metrics = next((tmp_path / "run" / "fits").glob("one-4096-256-*")) / "metrics.parquet"
    original = pl.read_parquet(metrics)
    weights = _tree_digest(metrics.parent / "sae")
    _truncate(metrics)
    for command in (["train"], ["study", "--only", "training"]):
        assert main([command[0], str(config), *command[1:], "--no-progress", "--device", "cpu"]) == 2
        assert re.search(
            r"metrics\.parquet: damaged or not a fit's metrics table \(parquet: .*\); it is assembled "
            r"from the parts in .*/metrics: delete .*metrics\.parquet and run `diffdict train CONFIG` "
            r"again, which rebuilds it \(the dictionaries are kept\)",
            capsys.readouterr().err,
        )
    metrics.unlink()
    assert main(["train", str(config), "--no-progress", "--device", "cpu"]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert pl.read_parquet(metrics).equals(original) and _tree_digest(metrics.parent / "sae") == weights


@pytest.mark.parametrize(
    "name,damage,message",
    [
        (
            "config.toml",
            "[prompts\nsource = ",
            r"config\.toml: damaged or not the run's copy of its config \(TOML\) \(.*\); pass the run's config with "
            r"--config CONFIG",
        ),
        (
            "run.json",
            '{"config": ',
            r"run\.json: damaged or not the run's record of its config \(run\.json\) \(.*\); "
            r"delete .*run\.json .*or pass the run's config with --config CONFIG",
        ),
    ],
)
def test_a_damaged_config_copy_names_the_file_before_the_run_loads(
    name, damage, message, trained_run, tmp_path, capsys
):
    config = _copy_run(trained_run, tmp_path)
    run = tmp_path / "run"
    (run / "config.toml").write_text(config.read_text())
    (run / "run.json").write_text(f'{{"config": "{config}"}}\n')
    (run / name).write_text(damage)
    before = _tree_digest(run)
    assert main(["atlas", str(run), "--dictionary", "sae", "--features", "0", "--device", "cpu"]) == 2
    assert re.search(message, capsys.readouterr().err, re.S)
    assert _tree_digest(run) == before


def test_a_damaged_timings_json_stops_a_stage_before_its_work(trained_run, tmp_path, capsys):
    config = _copy_run(trained_run, tmp_path)
    (tmp_path / "run" / "timings.json").write_text('{"stage_seconds": {"harvest": 1')
    before = _tree_digest(tmp_path / "run")
    assert main(["study", str(config), "--only", "training", "--no-progress", "--device", "cpu"]) == 2
    assert re.search(
        r"timings\.json: damaged or not the run's timings .*it only records stage times, threads and the "
        r"code's commit: delete .*timings\.json",
        capsys.readouterr().err,
    )
    assert _tree_digest(tmp_path / "run") == before and not (tmp_path / "run" / "tables").exists()


def test_findings_on_a_truncated_table_write_nothing(trained_run, tmp_path, capsys):
    import polars as pl

    run = tmp_path / "run"
    shutil.copytree(trained_run / "run", run)
    (run / "tables").mkdir()
    pl.DataFrame({"model": ["one"], "fvu": [0.1]}).write_parquet(run / "tables" / "transfer_metrics.parquet")
    pl.DataFrame({"model": ["one"], "hook": ["down.2.1"]}).write_parquet(run / "tables" / "layout.parquet")
    _truncate(run / "tables" / "layout.parquet")
    before = _tree_digest(run)
    assert main(["findings", str(run)]) == 2
    assert re.search(
        r"tables/layout\.parquet: damaged or not a study table \(parquet: .*\); compute it again with "
        r"`diffdict study CONFIG --only layout --force`",
        capsys.readouterr().err,
    )
    assert _tree_digest(run) == before  # no findings/ folder of some tables, no findings.md
    assert not (run / "findings").exists() and not (run / "findings.md").exists()


def test_findings_and_atlas_take_the_run_lock(trained_run, tmp_path, capsys):
    import json
    import socket
    import subprocess

    config = _copy_run(trained_run, tmp_path)
    run = tmp_path / "run"
    (run / "tables").mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run / ".diffdict.lock").write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "command": "diffdict study study.toml",
                }
            )
        )
        before = _tree_digest(run)
        for argv in (
            ["findings", str(run)],
            ["atlas", str(run), "--config", str(config), "--dictionary", "sae", "--features", "0", "--device", "cpu"],
        ):
            assert main(argv) == 2
            assert re.search(
                rf"run is in use by `diffdict study study\.toml` \(pid {holder.pid} on this host",
                capsys.readouterr().err,
            )
        assert _tree_digest(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_that_names_no_holder_is_never_taken_for_stale(tmp_path, capsys):
    """The window between creating a lock and writing it: another diffdict must not delete it."""
    config = write_tiny_study(tmp_path)
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / ".diffdict.lock"
    lock.write_text("")
    assert main(["report", str(config), "--device", "cpu"]) == 2
    assert re.search(
        r"\.diffdict\.lock exists but names no holder .*another diffdict may be starting on .*run right "
        r"now\. Wait a moment and run again; if no other diffdict uses .*run, delete .*\.diffdict\.lock",
        capsys.readouterr().err,
        re.S,
    )
    assert lock.exists() and lock.read_text() == ""


def test_a_lock_appears_with_its_holder(tmp_path, monkeypatch):
    """The lock is linked into place already written: a reader never sees it empty."""
    import json

    from diffdict.studies import lock as lock_module

    seen = []
    real_link = os.link

    def link(source, target):
        real_link(source, target)
        seen.append(Path(target).read_text())  # what a concurrent reader would find at this instant

    monkeypatch.setattr(lock_module.os, "link", link)
    with lock_module.run_lock(tmp_path / "run", command="diffdict test"):
        pass
    assert len(seen) == 1 and json.loads(seen[0])["command"] == "diffdict test"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # the lock and its temporary are gone
