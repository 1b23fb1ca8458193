"""Study configs: valid ones resolve, bad ones fail naming the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffdict.studies.check import check_config
from diffdict.studies.cli import main
from diffdict.studies.config import ConfigError, load_config
from study_fixtures import TINY_WINDOWS, write_tiny_study

REPO = Path(__file__).resolve().parents[1]
REAL_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.toml") if p.name != "quickstart.toml")


def test_tiny_study_config_parses(tmp_path):
    config = load_config(write_tiny_study(tmp_path))
    assert [m.name for m in config.models] == ["one", "multi"]
    assert config.dictionary("itda").architecture == "itda"
    assert config.studies.windows.windows["early"] == [0.6, 1.0]
    assert config.hooks_of("one") == ["down.2.1"]


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=[p.name for p in REAL_CONFIGS])
def test_real_model_configs_check_without_download(path, monkeypatch):
    from diffdict.studies import cost

    monkeypatch.setattr(cost, "free_bytes", lambda folder: (10**14, folder))  # tested apart: test_check_cost.py
    lines = check_config(load_config(path))
    assert lines[-1].startswith("ok")


def test_paper_hooks_resolve_in_the_turbo_config():
    lines = check_config(load_config(REPO / "configs" / "sdxl_turbo_saes.toml"))
    hook_lines = [line for line in lines if line.startswith("hook")]
    assert len(hook_lines) == 4 and all("d= 1280 grid 16x16" in line for line in hook_lines)


BAD = [
    ({"[harvest]": "[harvst]"}, r"harvst: unknown key; did you mean 'harvest'\?"),
    ({"n = 64\nk = 4": "n = 64\nk = 128"}, r"dictionaries\[0\]\.k: k=128 is larger than n=64"),
    ({"n = 64\nk = 4": "n = -3\nk = 4"}, r"dictionaries\[0\]\.n: must be > 0"),
    ({"batch_size = 6": 'batch_size = "six"'}, r"harvest\.batch_size: expected an integer"),
    (
        {'architecture = "itda"': 'architecture = "itdaa"'},
        r"dictionaries\[1\]\.architecture: 'itdaa' is not allowed; did you mean 'itda'",
    ),
    (
        {
            'model = "one"\nhook = "down.2.1"\nn = 64\nk = 4\ntokens = 4096\nbatch = 256\n\n[[dictionaries]]': 'model = "two"\nhook = "down.2.1"\nn = 64\nk = 4\ntokens = 4096\nbatch = 256\n\n[[dictionaries]]'  # noqa: E501
        },
        r"dictionaries\[0\]\.model: 'two' is not allowed.*Allowed: one, multi",
    ),
    ({'source = "toyworld"': 'source = "list"\nlist = []'}, r"prompts\.list: is empty"),
    ({'source = "toyworld"': 'source = "file"\nfile = "nowhere.txt"'}, r"prompts\.file: .*nowhere\.txt does not exist"),
    ({TINY_WINDOWS: "windows = { early = [0.6, 1.4] }"}, r"studies\.windows\.windows\.early: \[0\.6, 1\.4\] must be"),
    (
        {'edits = ["colour", "background"]': 'edits = ["color"]'},
        r"studies\.windows\.edits\[0\]: 'color' is not allowed; did you mean 'colour'",
    ),
    (
        {'pairs = [["sae", "itda"]]': 'pairs = [["sae"]]'},
        r"studies\.compare\.pairs\[0\]: expected two dictionary names",
    ),
    ({"guidance = 0.0": "guidance = -1.0"}, r"models\[0\]\.guidance: must be >= 0"),
    (
        {"seeds": "seeds", "eval_fraction = 0.34": "eval_fraction = 1.5"},
        r"prompts\.eval_fraction: must be strictly between 0 and 1",
    ),
    (
        {'dictionaries = ["sae"]\nprompts = 2\nedits': 'dictionaries = ["sae+itda"]\nprompts = 2\nedits'},
        r"studies\.windows\.dictionaries\[0\]: 'sae\+itda': dictionaries edited together must share a model and sit on different hooks",  # noqa: E501
    ),
    (
        {"strengths = [1, 4]": "strengths = [1, nan]"},
        r"studies\.editability\.strengths\[1\]: is nan, but every number must be finite",
    ),
    ({"strengths = [1, 4]": "strengths = []"}, r"studies\.editability\.strengths: is empty"),
    (
        {'attributes = ["colour", "position"]': 'attributes = ["size"]'},
        r"studies\.editability\.attributes\[0\]: 'size' is not allowed",
    ),
    (
        {'models = ["one", "multi"]\ndictionaries = ["sae"]': 'models = ["three"]\ndictionaries = ["sae"]'},
        r"studies\.layout\.models\[0\]: 'three' is not allowed",
    ),
    (
        {'groups = { pair = ["down.2.1", "mid.0"] }': "groups = { pair = [] }"},
        r"studies\.editability\.groups\.pair: is empty",
    ),
]


@pytest.mark.parametrize("replace,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_configs_name_file_key_and_fix(tmp_path, replace, message):
    path = write_tiny_study(tmp_path, **replace)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_unknown_hook_for_a_model_is_found_by_check(tmp_path):
    path = write_tiny_study(tmp_path, **{'hooks = ["down.2.1"]': 'hooks = ["down.2.1", "down.7.0"]'})
    with pytest.raises(ValueError, match=r"harvest\.hooks: unknown hook 'down\.7\.0'.*Valid hooks"):
        check_config(load_config(path))


def test_unknown_editability_hook_is_found_by_check(tmp_path):
    path = write_tiny_study(
        tmp_path, **{'groups = { pair = ["down.2.1", "mid.0"] }': 'groups = { pair = ["down.2.1", "mid.9"] }'}
    )
    with pytest.raises(ValueError, match=r"studies\.editability: unknown hook 'mid\.9'"):
        check_config(load_config(path))


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys):
    path = write_tiny_study(tmp_path, **{"[harvest]": "[harvst]"})
    assert main(["check", str(path)]) == 2
    assert "did you mean 'harvest'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_shipped_config_is_found_by_name_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the names resolve to the shipped files
    for name in ("quickstart", "quickstart.toml", "configs/quickstart.toml"):
        config = load_config(name)
        assert config.path == REPO / "configs" / "quickstart.toml" and config.name == "quickstart"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.toml").write_text(
        (REPO / "configs" / "quickstart.toml").read_text().replace('name = "quickstart"', 'name = "mine"', 1)
    )
    assert load_config("configs/quickstart.toml").name == "mine"  # a file here wins over the shipped one
    with pytest.raises(
        ConfigError,
        match=r"quickstrat does not exist; .*shipped configs by name: .*quickstart, "
        r"sdxl_transfer",
    ):
        load_config("quickstrat")
    with pytest.raises(ConfigError, match=r"elsewhere/quickstart\.toml does not exist"):
        load_config("elsewhere/quickstart.toml")  # a path in another folder never means a shipped config
