"""Plug-ins named by a config (`plugins = [...]`) work from the `diffdict` command itself: a study, a
dictionary architecture and a model family, each one file in a folder outside the repository, are imported
before the config is resolved, so `diffdict check` and `diffdict run` accept and run them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl

from test_one_file_extensions import FAMILY_MODULE  # the made-up "pixel" family: one module

REPO = Path(__file__).resolve().parents[1]

STUDY = """
from dataclasses import dataclass

import polars as pl

from diffdict.studies.registry import StudyKind, register


@dataclass
class PromptCountStudy:
    multiplier: int = 1


def compute(run):
    study = run.config.studies.prompt_count
    return {"prompt_count": pl.DataFrame({"prompts": [len(run.prompts) * study.multiplier]})}


register(StudyKind(name="prompt_count", config=PromptCountStudy, title="Prompt count", about="How many prompts.",
                   compute=compute, tables=("prompt_count",)))
"""

ARCHITECTURE = '''
from diffdict.dictionaries.registry import register
from diffdict.dictionaries.topk_sae import TopKSAE


@register
class WideTopK(TopKSAE):
    """A top-k SAE under its own architecture name: the smallest plug-in learner."""

    architecture = "wide_topk"
'''

CONFIG = """
name = "plugins"
out = "{out}"
plugins = ["./plugin_study.py", "./plugin_arch.py", "./plugin_family.py"]

[prompts]
source = "list"
list = ["a red square", "a small blue circle", "a green triangle", "a big cat", "a dog", "a tree"]
eval_fraction = 0.34

[[models]]
name = "tiny"
id = "tiny/pixel"
steps = 1

[harvest]
hooks = ["mid.0"]

[[dictionaries]]
name = "wide"
architecture = "wide_topk"
model = "tiny"
hook = "mid.0"
n = 64
k = 4
tokens = 1024
batch = 128

[studies.prompt_count]
multiplier = 3
"""


def diffdict(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "diffdict", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_config_runs_its_own_study_and_architecture(tmp_path):
    (tmp_path / "plugin_study.py").write_text(STUDY)
    (tmp_path / "plugin_arch.py").write_text(ARCHITECTURE)
    (tmp_path / "plugin_family.py").write_text(textwrap.dedent(FAMILY_MODULE))
    config = tmp_path / "plugins.toml"
    config.write_text(CONFIG.format(out=tmp_path / "run"))
    checked = diffdict("check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "wide_topk" in checked.stdout and "studies: prompt_count" in checked.stdout
    assert "tiny/pixel (pixel)" in checked.stdout and "d=   48" in checked.stdout  # the family's own width
    ran = diffdict("run", str(config), "--no-progress", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    assert pl.read_parquet(tmp_path / "run" / "tables" / "prompt_count.parquet")["prompts"].to_list() == [18]
    saved = next((tmp_path / "run" / "fits").glob("*/wide/config.json")).read_text()
    assert '"architecture": "wide_topk"' in saved


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(CONFIG.format(out=tmp_path / "run"))  # the plug-in files are missing
    result = diffdict("check", str(config))
    assert result.returncode == 2
    assert "plugins[0]" in result.stderr and "plugin_study.py does not exist" in result.stderr
    (tmp_path / "plugin_study.py").write_text("raise RuntimeError('broken plug-in')\n")
    result = diffdict("check", str(config))
    assert (
        result.returncode == 2
        and "plugins[0]: importing './plugin_study.py' failed: RuntimeError: broken" in result.stderr
    )
