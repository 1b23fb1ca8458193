"""The command line as a new user meets it: a quiet start-up, and `--out DIR` on every stage command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffdict.studies import cli

REPO = Path(__file__).resolve().parents[1]
STAGES = ["run", "check", "harvest", "train", "study", "report"]

CONFIG = """
name = "out-flag"
out = "{out}"

[prompts]
source = "list"
list = ["a red square", "a blue circle"]
count = 2
eval_fraction = 0.5

[[models]]
name = "tiny"
id = "tiny/sdxl"
steps = 1
guidance = 0.0

[harvest]
hooks = ["mid.0"]
dtype = "fp32"
batch_size = 2

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "tiny"
hook = "mid.0"
n = 16
k = 2
tokens = 128
batch = 64
"""


def test_hooks_start_up_says_nothing_about_bitsandbytes_kernels():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "diffdict", "hooks", "toy/sdxl-turbo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "down.2.1" in result.stdout
    for text in ("gemm_4bit_forward", "kernels-community", "Failed to load"):
        assert text not in result.stderr, result.stderr


def test_help_does_not_import_torch():
    code = "import sys; from diffdict.studies.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(CONFIG.format(out=tmp_path / "from-config"))
    return path


@pytest.mark.parametrize("stage", STAGES)
def test_out_overrides_the_configs_out_for_every_stage(tmp_path, monkeypatch, capsys, stage):
    from diffdict.studies import check, pipeline
    from diffdict.studies.run import Run

    roots = []
    monkeypatch.setattr(check, "check_config", lambda config, **kwargs: [f"output in {config.out}"])
    monkeypatch.setattr(pipeline, "run_all", lambda run, force: roots.append(run.root) or {})
    monkeypatch.setattr(pipeline, "run_studies", lambda run, only, force: roots.append(run.root))
    monkeypatch.setattr(pipeline, "build_report", lambda run: roots.append(run.root) or run.root / "report.html")
    monkeypatch.setattr(Run, "harvest", lambda run: roots.append(run.root) or {})
    monkeypatch.setattr(Run, "train", lambda run: roots.append(run.root))
    target = tmp_path / "elsewhere"
    assert cli.main([stage, str(_config(tmp_path)), "--out", str(target)]) == 0
    out = capsys.readouterr().out
    if stage == "check":
        assert f"output in {target}" in out
    else:
        assert roots and all(root == target for root in roots)
    assert "from-config" not in out


def test_check_and_harvest_write_where_out_says(tmp_path, capsys):
    config = _config(tmp_path)
    target = tmp_path / "elsewhere"
    assert cli.main(["check", str(config), "--out", str(target)]) == 0
    assert f"output in {target}" in capsys.readouterr().out
    assert cli.main(["harvest", str(config), "--out", str(target), "--no-progress", "--device", "cpu"]) == 0
    assert (target / "stores" / "tiny" / "store.json").is_file()
    assert not (tmp_path / "from-config").exists()
