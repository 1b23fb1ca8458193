"""Plots and the self-contained HTML report, opened in headless Chromium; CLIP scores with random weights."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from PIL import Image

from diffdict.analysis import plots
from diffdict.analysis.browser import image_load_status, report_problems, screenshot
from diffdict.analysis.clip_score import ClipScorer
from diffdict.analysis.report import FeatureCard, Section, Tile, readable, write_report


@pytest.fixture(scope="module")
def tables():
    fvu = pl.DataFrame(
        {"t": [1.0, 0.5, 0.0] * 2, "fvu": [0.2, 0.3, 0.5, 0.25, 0.35, 0.6], "model": ["turbo"] * 3 + ["base"] * 3}
    )
    windows = pl.DataFrame(
        {
            "edit": ["colour", "colour", "shape", "shape"],
            "window": ["early", "late"] * 2,
            "success": [0.9, 0.1, 0.8, 0.05],
        }
    )
    return fvu, windows


def test_report_is_self_contained_and_every_image_loads_in_chromium(tmp_path, tables):
    fvu, windows = tables
    line = plots.line_plot(fvu, "t", "fvu", "model", tmp_path / "plots" / "fvu.png", "FVU against t")
    heat = plots.heatmap(windows, "edit", "window", "success", tmp_path / "plots" / "windows.png")
    bars = plots.bar_plot(windows, "edit", "success", "window", tmp_path / "plots" / "bars.png")
    gallery = [(f"feature {i}", Image.new("RGB", (16, 16), (40 * i, 100, 200))) for i in range(4)]
    page = write_report(
        tmp_path / "report.html",
        "test run",
        [
            Section("Transfer", "FVU per step.", tables=[("fvu", fvu)], plots=[("fvu", line)]),
            Section("Windows", plots=[("heat", heat), ("bars", bars)], galleries=[("atlas", gallery)]),
        ],
    )
    text = page.read_text()
    assert 'src="plots/' not in text and "data:image/png;base64," in text  # nothing points outside the file
    (tmp_path / "plots" / "fvu.png").unlink()  # the page must not need its neighbours
    assert image_load_status(page) == {"total": 7, "loaded": 7, "broken": 0}


def test_report_opens_with_findings_and_keeps_tables_collapsed(tmp_path, tables):
    fvu, windows = tables
    line = plots.line_plot(fvu, "t", "fvu", "model", tmp_path / "fvu.png", "FVU against t")
    tile = Image.new("RGB", (128, 128), (200, 40, 40))
    card = FeatureCard(
        "sae",
        7,
        "colour:red",
        0.97,
        "",
        0.12,
        1.5,
        top=[Tile(tile, "1.2", "a red circle")],
        empty=[Tile(tile, "off"), Tile(tile, "4x")],
        strip=[Tile(tile, "-4x"), Tile(tile, "+8x")],
        strip_prompt="a red circle",
        architecture="topk_sae",
    )
    page = write_report(
        tmp_path / "report.html",
        "test run",
        [
            Section(
                "Transfer",
                "about it",
                tables=[("fvu", fvu), ("windows", windows)],
                plots=[("fvu", line)],
                summary="FVU 0.20 on turbo.",
            ),
            Section("Atlas", cards=[card], tables=[("empty", pl.DataFrame({"a": []}))]),
        ],
        "Models: turbo.",
    )
    text = page.read_text()
    assert text.index("FVU 0.20 on turbo.") < text.index('<section id="s0"')  # findings before any study
    assert text.index("<figure") < text.index("<details")  # figures before tables
    marks, problems = report_problems(page)
    assert problems == [] and marks["csv-total"] == 3 and marks["images-total"] == 6
    shot = screenshot(page, tmp_path / "first_screen.png")
    assert Image.open(shot).size == (1280, 900)


def test_numbers_are_rounded_for_reading():
    assert [readable(v) for v in (0.123456, 12345.6, 3, float("nan"), "text")] == ["0.123", "12,346", "3", "–", "text"]


def test_one_method_palette_for_every_plot():
    methods = ["turbo-sae", "turbo-itda", "raw channels", "random directions", "diff-in-means", "logistic probe"]
    assert [plots.method_kind(m) for m in methods] == [
        "dictionary",
        "dictionary",
        "raw channels",
        "random",
        "oracle",
        "probe",
    ]
    palette = plots.method_palette(methods)
    assert palette["turbo-sae"] != palette["turbo-itda"]  # each dictionary its own blue
    assert palette["random directions"] == plots.KIND_COLOURS["random"] == plots.method_palette(["random"])["random"]
    assert palette["diff-in-means"] == plots.method_palette(["oracle (diff-in-means)"])["oracle (diff-in-means)"]
    markers = plots.method_markers(methods)
    assert len(set(markers.values())) == len(methods)


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
