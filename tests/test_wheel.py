"""The wheel a user installs: built from the tracked files of this checkout, installed into a fresh
venv outside it, it holds every module, the toy weights and the configs, and its `diffdict` runs."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Top-level folder -> where pyproject.toml's package-dir mapping puts it in the wheel.
INSTALLED_AS = {
    "adapters": "diffdict/adapters",
    "dictionaries": "diffdict/dictionaries",
    "studies": "diffdict/studies",
    "analysis": "diffdict/analysis",
    "toyworld": "diffdict/toyworld",
    "configs": "diffdict/configs",
    "diffdict": "diffdict",
}


def _run(command: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _tracked_files() -> list[str]:
    return _run(["git", "ls-files", *INSTALLED_AS], cwd=REPO).stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked files (what a clean clone holds), not the working tree."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in [*_tracked_files(), "pyproject.toml", "README.md"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-w",
            out,
            source,
        ],
        cwd=out,
    )
    (built,) = out.glob("diffdict-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """A fresh venv holding only the wheel; the dependencies (torch, diffusers, ...) come from this
    environment's site-packages through a .pth line, which adds the folder but runs none of its .pth
    files, so this checkout's editable install stays invisible there."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-cache-dir", wheel], cwd=venv)
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return venv, env


def test_the_wheel_holds_every_module_the_toy_weights_and_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for file in _tracked_files():
        folder, _, rest = file.partition("/")
        if file.endswith((".py", ".safetensors", ".json", ".toml", ".txt")) and not rest.endswith("README.md"):
            assert f"{INSTALLED_AS[folder]}/{rest}" in names, f"{file} is missing from {wheel.name}"
    assert not {name for name in names if name.split("/")[0] in ("adapters", "studies", "dictionaries", "tests")}


def test_the_installed_wheel_lists_hooks_and_generates_outside_the_checkout(installed, tmp_path):
    venv, env = installed
    where = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import diffdict.adapters as a, diffdict.studies.config as c; "
            "print(a.__file__); print(c.shipped_configs()['quickstart'])",
        ],
        cwd=tmp_path,
        env=env,
    )
    module, config = where.stdout.split()
    assert module.startswith(str(venv)) and config.startswith(str(venv)), where.stdout

    hooks = _run([venv / "bin" / "diffdict", "hooks", "toy/sdxl-turbo"], cwd=tmp_path, env=env)
    assert "down.2.1" in hooks.stdout and "toy/sdxl-turbo" in hooks.stdout

    generated = _run(
        [
            venv / "bin" / "diffdict",
            "generate",
            "toy/sdxl-turbo",
            "a red circle",
            "--hooks",
            "down.2.1",
            "--device",
            "cpu",
            "--out",
            tmp_path / "images",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert "down.2.1" in generated.stdout
    assert len(list((tmp_path / "images").glob("*.png"))) == 1

    checked = _run([venv / "bin" / "diffdict", "check", "quickstart"], cwd=tmp_path, env=env)
    assert checked.stdout.strip().splitlines()[-1].startswith("ok"), checked.stdout
