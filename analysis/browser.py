"""Open a page in headless Chromium: read back what its load-check script recorded, or take a
screenshot of its first screen.

`python -m analysis.browser PAGE [SCREENSHOT.png]` prints the checks of a written report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Flags that keep Chromium from reaching for the network (closed here) and from needing a GPU.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no Chromium found: install Debian's `chromium` package (make test does this)")


def _chromium(page: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium_binary(), *_FLAGS, *extra, f"--user-data-dir={profile}", Path(page).resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def rendered_dom(page: Path, timeout: float = 90.0) -> str:
    """The page's DOM after it loaded and its scripts ran."""
    result = _chromium(page, ["--dump-dom"], timeout)
    if re.search(r"<body[^>]*>", result.stdout) is None:
        raise RuntimeError(f"Chromium returned no page for {page}: {result.stderr[-500:]}")
    return result.stdout


def _body_tag(dom: str) -> str:
    """The <body ...> tag of a DOM from rendered_dom (which refuses a page without one)."""
    tag = re.search(r"<body[^>]*>", dom)
    assert tag is not None, "rendered_dom returned a page without <body>"
    return tag.group(0)


def page_marks(page: Path, timeout: float = 90.0) -> dict[str, int]:
    """Every `data-*` count the page's check script set on <body> (images-*, csv-*)."""
    body = _body_tag(rendered_dom(page, timeout))
    marks = {k: int(v) for k, v in re.findall(r'data-([\w-]+)="(\d+)"', body)}
    if not any(k.startswith("images-") for k in marks):
        raise RuntimeError(f"{page} has no image-load marks: was it written by analysis.report?")
    return marks


def image_load_status(page: Path, timeout: float = 90.0) -> dict[str, int]:
    """{'total', 'loaded', 'broken'} image counts of a report page after it loaded in Chromium."""
    return {k.removeprefix("images-"): v for k, v in page_marks(page, timeout).items() if k.startswith("images-")}


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 900, timeout: float = 90.0) -> Path:
    """A PNG of the page's first screen (width x height CSS pixels)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _chromium(page, [f"--screenshot={out}", f"--window-size={width},{height}"], timeout)
    if not out.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {page}: {result.stderr[-500:]}")
    return out


def report_problems(page: Path, timeout: float = 90.0) -> tuple[dict[str, int], list[str]]:
    """(marks, problems) of a report page read the way a researcher meets it: every image
    loads, every CSV link decodes to its table, the summary comes first, every table is
    collapsed, and each section shows its figures before its tables."""
    dom = rendered_dom(page, timeout)
    body = _body_tag(dom)
    marks = {k: int(v) for k, v in re.findall(r'data-([\w-]+)="(\d+)"', body)}
    problems = []
    if marks.get("images-broken", 1) or marks.get("images-loaded", 0) != marks.get("images-total", -1):
        problems.append(f"images: {marks}")
    if marks.get("csv-ok", -1) != marks.get("csv-total", -2):
        problems.append(f"CSV links: {marks.get('csv-ok')} of {marks.get('csv-total')} decode to their table")
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", dom)
    if not headings or headings[0] != "Summary":
        problems.append(f"the first heading is {headings[:1]}, not the summary")
    details = re.findall(r"<details[^>]*>", dom)
    if any(" open" in d for d in details):
        problems.append("a table is expanded on load")
    if dom.count("<table") != len(details):
        problems.append(f"{dom.count('<table')} tables but {len(details)} collapsed blocks")
    for section in re.split(r'<section id="s\d+"', dom)[1:]:
        figure, table = section.find("<figure"), section.find("<details")
        if figure >= 0 and 0 <= table < figure:
            problems.append("a section shows a table before its figures")
    return marks, problems


if __name__ == "__main__":
    target = Path(sys.argv[1])
    found, issues = report_problems(target)
    print(found)
    print("\n".join(issues) or "report reads well: images load, CSV links work, summary first, tables collapsed")
    if len(sys.argv) > 2:
        print(screenshot(target, Path(sys.argv[2])))
