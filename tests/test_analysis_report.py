"""Plots and the self-contained HTML report, opened in headless Chromium; CLIP scores with random weights."""
from __future__ import annotations

import polars as pl
import pytest
import torch
from PIL import Image

from analysis import plots
from analysis.browser import image_load_status
from analysis.clip_score import ClipScorer
from analysis.report import Section, write_report


@pytest.fixture(scope="module")
def tables():
    fvu = pl.DataFrame({"t": [1.0, 0.5, 0.0] * 2, "fvu": [0.2, 0.3, 0.5, 0.25, 0.35, 0.6],
                        "model": ["turbo"] * 3 + ["base"] * 3})
    windows = pl.DataFrame({"edit": ["colour", "colour", "shape", "shape"], "window": ["early", "late"] * 2,
                            "success": [0.9, 0.1, 0.8, 0.05]})
    return fvu, windows


def test_report_is_self_contained_and_every_image_loads_in_chromium(tmp_path, tables):
    fvu, windows = tables
    line = plots.line_plot(fvu, "t", "fvu", "model", tmp_path / "plots" / "fvu.png", "FVU against t")
    heat = plots.heatmap(windows, "edit", "window", "success", tmp_path / "plots" / "windows.png")
    bars = plots.bar_plot(windows, "edit", "success", "window", tmp_path / "plots" / "bars.png")
    gallery = [(f"feature {i}", Image.new("RGB", (16, 16), (40 * i, 100, 200))) for i in range(4)]
    page = write_report(tmp_path / "report.html", "test run", [
        Section("Transfer", "FVU per step.", tables=[("fvu", fvu)], plots=[("fvu", line)]),
        Section("Windows", plots=[("heat", heat), ("bars", bars)], galleries=[("atlas", gallery)]),
    ])
    text = page.read_text()
    assert 'src="plots/' not in text and "data:image/png;base64," in text  # nothing points outside the file
    (tmp_path / "plots" / "fvu.png").unlink()  # the page must not need its neighbours
    assert image_load_status(page) == {"total": 7, "loaded": 7, "broken": 0}


def test_browser_check_reports_a_broken_image(tmp_path):
    page = write_report(tmp_path / "r.html", "t", [Section("s")])
    page.write_text(page.read_text().replace("</body>", '<img src="missing.png"></body>'))
    assert image_load_status(page)["broken"] == 1


def test_plot_errors_name_the_missing_column(tmp_path, tables):
    with pytest.raises(ValueError, match=r"no column\(s\) \['fvu_missing'\]"):
        plots.line_plot(tables[0], "t", "fvu_missing", "model", tmp_path / "x.png")


def test_clip_scores_with_random_weights():
    scorer = ClipScorer.random()
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    same = scorer.image_image([red, blue], [red, blue])
    torch.testing.assert_close(same, torch.ones(2), atol=1e-5, rtol=0)
    assert scorer.image_image([red], [blue])[0] < 1.0
    text = scorer.image_text([red, blue], ["a red square", "a blue square"])
    assert text.shape == (2,) and torch.all(text.abs() <= 1.0 + 1e-5)
    with pytest.raises(ValueError, match="one text per image"):
        scorer.image_text([red], ["a", "b"])
