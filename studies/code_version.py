"""Which code made a result: the git commit of the checkout the package runs from."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_commit() -> str:
    """Short commit hash, with "-dirty" when tracked files differ from it; "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
