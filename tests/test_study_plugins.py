"""A study declared outside diffdict's own files: registered once, it is configured by its own
[studies.NAME] table, validated, run by `diffdict study`, written to the tables folder and shown in the
report; a [studies.X] table nobody registered is refused with the registered names."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from diffdict.studies.cli import main
from diffdict.studies.config import ConfigError
from diffdict.studies.registry import BUILTIN, StudyKind, register, study_names, unregister

REPO = Path(__file__).resolve().parents[1]


@dataclass
class PromptWordsStudy:
    """The fields of [studies.prompt_words]."""

    longest: int = 2  # how many of the longest prompts are listed


def _validate(config, study: PromptWordsStudy, source: str) -> None:
    if study.longest > len(config.prompts.list):
        raise ConfigError(
            f"{source}: studies.prompt_words.longest: {study.longest} is more than the "
            f"{len(config.prompts.list)} prompts; list at most that many"
        )


def _compute(run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.prompt_words
    ranked = sorted(run.prompts, key=lambda p: (-len(p.text.split()), p.id))[: study.longest]
    return {
        "prompt_words": pl.DataFrame(
            {"prompt": [p.text for p in ranked], "words": [len(p.text.split()) for p in ranked]}
        )
    }


def _summarize(run, tables: dict[str, pl.DataFrame]) -> str:
    top = tables["prompt_words"].row(0, named=True)
    return f"The longest prompt has {top['words']} words: {top['prompt']!r}."


PROMPT_WORDS = StudyKind(
    name="prompt_words",
    config=PromptWordsStudy,
    title="Prompt lengths",
    about="The longest prompts of the run, by words.",
    compute=_compute,
    plot=lambda run, tables: [],
    summarize=_summarize,
    tables=("prompt_words",),
    validate=_validate,
)

CONFIG = """
name = "plugin"
out = "{out}"

[prompts]
source = "list"
list = ["a red square", "a small blue circle on grey", "a green triangle at the top"]
count = 3
eval_fraction = 0.34

[[models]]
name = "tiny"
id = "tiny/sdxl"
steps = 1
guidance = 0.0

[studies.{study}]
{body}
"""


def _config(folder: Path, study: str = "prompt_words", body: str = "longest = 2") -> Path:
    path = folder / "plugin.toml"
    path.write_text(CONFIG.format(out=folder / "run", study=study, body=body))
    return path


@pytest.fixture
def prompt_words():
    """The study registered for one test, and forgotten after it (also when the test fails)."""
    register(PROMPT_WORDS)
    try:
        yield PROMPT_WORDS
    finally:
        unregister(PROMPT_WORDS.name)
    assert PROMPT_WORDS.name not in study_names()


def test_a_registered_study_runs_into_the_tables_and_the_report(prompt_words, tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["check", str(config)]) == 0
    assert "studies: prompt_words" in capsys.readouterr().out
    assert main(["study", str(config), "--no-progress", "--device", "cpu"]) == 0
    table = pl.read_parquet(tmp_path / "run" / "tables" / "prompt_words.parquet")
    assert table.to_dicts() == [
        {"prompt": "a small blue circle on grey", "words": 6},
        {"prompt": "a green triangle at the top", "words": 6},
    ]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Prompt lengths</h2>" in report and "The longest prompts of the run, by words." in report
    assert "The longest prompt has 6 words" in report  # its summary opens the report
    assert "Table <b>prompt_words</b>: 2 rows" in report
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the line
    assert f"--only STUDY {', '.join(study_names())}" in help_text and study_names()[-1] == "prompt_words"


def test_a_registered_study_validates_its_own_table(prompt_words, tmp_path, capsys):
    assert main(["check", str(_config(tmp_path, body="longest = 5"))]) == 2
    assert "studies.prompt_words.longest: 5 is more than the 3 prompts" in capsys.readouterr().err
    assert main(["check", str(_config(tmp_path, body="longst = 2"))]) == 2
    assert "studies.prompt_words.longst: unknown key; did you mean 'longest'?" in capsys.readouterr().err


def test_an_unknown_study_table_names_the_registered_studies(prompt_words, tmp_path, capsys):
    assert main(["check", str(_config(tmp_path, study="prompt_wrods"))]) == 2
    error = capsys.readouterr().err
    assert (
        "studies.prompt_wrods: unknown study; did you mean 'prompt_words'?; the registered studies are: "
        f"{', '.join(study_names())}"
    ) in error and "prompt_words" in study_names()


def test_an_unregistered_study_is_unknown_again(tmp_path, capsys):
    register(PROMPT_WORDS)
    unregister(PROMPT_WORDS.name)
    assert main(["check", str(_config(tmp_path))]) == 2
    assert (
        f"studies.prompt_words: unknown study; the registered studies are: {', '.join(study_names())} "
        f"(each one a [studies.NAME] table)"
    ) in capsys.readouterr().err


@pytest.mark.parametrize(
    "change,message",
    [
        ({"name": "layout"}, r"'layout' is already registered"),
        ({"name": "items"}, r"study name 'items': use a Python identifier"),
        ({"name": "prompt-words"}, r"study name 'prompt-words': use a Python identifier"),
        ({"tables": ("layout",)}, r"table 'layout' is already written by study 'layout'"),
        ({"config": dict}, r"config must be a dataclass"),
    ],
)
def test_registration_refuses_what_would_clash(change, message):
    from dataclasses import replace

    before = study_names()
    with pytest.raises((ValueError, TypeError), match=message):
        register(replace(PROMPT_WORDS, **change))
    assert study_names() == before and set(BUILTIN) <= set(before)


def test_the_registry_and_config_parsing_stay_torch_free():
    code = (
        "import sys; from diffdict.studies.config import parse_config; from diffdict.studies.registry import study_names; "  # noqa: E501
        "config = parse_config({'name': 'x', 'models': [{'name': 'm', 'id': 'tiny/sdxl'}], "
        "'studies': {'windows': {}, 'atlas': {}}}); "
        "print(study_names(), [name for name, _ in config.studies.items()], 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == f"{tuple(BUILTIN)} ['windows', 'atlas'] False", result.stderr
