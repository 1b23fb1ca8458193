"""Open a page in headless Chromium and read back what its load-check script recorded."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Flags that keep Chromium from reaching for the network (closed here) and from needing a GPU.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=5000", "--dump-dom"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no Chromium found: install Debian's `chromium` package (make test does this)")


def image_load_status(page: Path, timeout: float = 60.0) -> dict[str, int]:
    """{'total', 'loaded', 'broken'} image counts of a report page after it loaded in Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium_binary(), *_FLAGS, f"--user-data-dir={profile}", Path(page).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )
    body = re.search(r"<body[^>]*>", result.stdout)
    if body is None:
        raise RuntimeError(f"Chromium returned no page for {page}: {result.stderr[-500:]}")
    counts = dict(re.findall(r'data-images-(\w+)="(\d+)"', body.group(0)))
    if not counts:
        raise RuntimeError(f"{page} has no image-load marks: was it written by analysis.report?")
    return {k: int(v) for k, v in counts.items()}
