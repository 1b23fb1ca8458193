"""`diffdict run` on a tiny study: every stage, every study, a report whose images all load."""

from __future__ import annotations

import json

import polars as pl
import pytest
from PIL import Image

from diffdict.analysis.browser import image_load_status, report_problems, screenshot
from diffdict.studies.cli import main
from study_fixtures import write_tiny_study


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    config = write_tiny_study(folder)
    assert main(["run", str(config), "--no-progress", "--device", "cpu"]) == 0
    return folder / "run", config


def _table(run_dir, name):
    return pl.read_parquet(run_dir / "tables" / f"{name}.parquet")


def test_transfer_table_has_every_model_step_and_branch(finished_run):
    run_dir, _ = finished_run
    metrics = _table(run_dir, "transfer_metrics")
    keys = set(metrics.select("target_model", "branch", "step").iter_rows())
    assert keys == {
        ("one", "cond", 0),
        ("multi", "cond", 0),
        ("multi", "cond", 1),
        ("multi", "uncond", 0),
        ("multi", "uncond", 1),
    }
    assert metrics["fvu"].is_finite().all() and (metrics["fvu"] >= 0).all()
    assert (metrics["l0"] <= 4).all()
    splice = _table(run_dir, "transfer_splice")
    assert splice["judge_agreement"].is_between(0, 1).all() and splice["pixel_similarity"].is_between(0, 1).all()


def test_transfer_edits_each_target_with_the_source_features_beside_its_own_references(finished_run):
    run_dir, _ = finished_run
    edits = _table(run_dir, "transfer_edits")
    methods = {model: set(group["method"].to_list()) for (model,), group in edits.group_by(["model"])}
    # each target's own dictionary of the transferred one's architecture (no SAE-vs-ITDA mix-up on the source)
    assert methods == {"one": {"sae", "oracle", "random"}, "multi": {"sae", "oracle", "random"}}
    assert set(edits["source_model"].to_list()) == {"one"} and set(edits["attribute"].to_list()) == {"colour"}
    assert (edits["clean_success"] <= edits["success"]).all()


def test_strengths_are_chosen_on_tuning_prompts_and_scored_on_held_out_ones(finished_run):
    run_dir, _ = finished_run
    for name in ("editability", "transfer_edits"):
        edits = _table(run_dir, name)
        tuned, scored = (edits.filter(pl.col("split") == split) for split in ("tune", "score"))
        # no prompt is both: the choice is made on train prompts, the number measured on held-out ones
        assert not set(tuned["prompt_id"].to_list()) & set(scored["prompt_id"].to_list())
        keys = [k for k in ("dictionary", "model", "unit", "attribute", "window", "method") if k in edits.columns]
        # the sweep runs on the tuning prompts; each held-out cell is edited at one strength, the tuned one
        assert tuned.group_by(keys).agg(pl.col("strength").n_unique())["strength"].min() == edits["strength"].n_unique()
        assert (scored.group_by(keys).agg(pl.col("strength").n_unique())["strength"] == 1).all()


def test_another_study_seed_draws_other_prompts_into_its_own_folder(finished_run, capsys):
    run_dir, config = finished_run
    before = _table(run_dir, "transfer_splice")
    assert main(["study", str(config), "--seed", "7", "--only", "transfer", "--no-progress", "--device", "cpu"]) == 0
    seeded = pl.read_parquet(run_dir / "seeds" / "7" / "tables" / "transfer_edits.parquet")
    assert _table(run_dir, "transfer_splice").equals(before)  # the seed-0 tables are untouched
    scored = lambda t: set(t.filter(pl.col("split") == "score")["prompt_id"].to_list())  # noqa: E731
    held_out = scored(_table(run_dir, "transfer_edits")) | scored(seeded)
    assert len(held_out) <= 4  # both draw from the same 4 held-out prompts
    assert (run_dir / "seeds" / "7" / "timings.json").exists() and not (run_dir / "seeds" / "7" / "stores").exists()
    assert main(["findings", str(run_dir)]) == 0
    markdown = (run_dir / "findings.md").read_text()
    assert "Verdict: **" in markdown and (run_dir / "findings" / "seed-7" / "transfer_metrics.csv").exists()
    assert "seed 7" in markdown
    recorded = json.loads((run_dir / "timings.json").read_text())["code"]  # what `diffdict run` ran
    provenance = json.loads((run_dir / "findings" / "provenance.json").read_text())
    assert (provenance["commit"], provenance["date"]) == (recorded["commit"], recorded["date"])


def test_compare_alignment_stands_between_its_floor_and_its_ceiling(finished_run):
    run_dir, _ = finished_run
    metrics = _table(run_dir, "compare_metrics")
    assert metrics["method"].to_list() == [
        "sae",
        "itda",
        "raw channels",
        "random",
        "fg/bg only",
        "base rate",
        "diff-in-means",
        "logistic probe",
    ]
    assert metrics["kind"].to_list() == [
        "dictionary",
        "dictionary",
        "raw channels",
        "random",
        "fg/bg only",
        "base rate",
        "oracle",
        "probe",
    ]
    # 12 prompts, 4 held out: selection and scoring never share a prompt
    assert set(metrics["selection_prompts"].to_list()) == {8} and set(metrics["scoring_prompts"].to_list()) == {4}
    probe = metrics.filter(pl.col("method") == "logistic probe").row(0, named=True)
    assert probe["f1_share_of_probe"] == pytest.approx(1.0)
    assert metrics["mean_f1"].is_between(0, 1).all() and metrics["mean_auroc"].is_between(0, 1).all()
    alignment = _table(run_dir, "compare_alignment")
    assert alignment["f1"].is_between(0, 1).all() and alignment["auroc"].is_between(0, 1).all()
    assert set(alignment["world"].to_list()) == {"toy", "twin"}  # the planted twin runs beside the real hook
    assert set(alignment["family"].to_list()) >= {"global", "row", "column"}
    summary = _table(run_dir, "compare_alignment_summary")
    random = summary.filter((pl.col("method") == "random") & (pl.col("attribute") == "all"))
    assert (random["draws"] == 5).all() and random["draw_sd"].is_not_null().all()  # floor averaged over 5 draws
    assert _table(run_dir, "compare_twin")["cell_share"].is_between(0, 1).all()
    sparse = _table(run_dir, "compare_sparse_probing")
    assert set(sparse["k"].to_list()) == {1, 2, 4, 8}
    assert set(sparse["method"].to_list()) == {"sae", "itda", "raw channels", "random"}
    assert not _table(run_dir, "compare_alignment_by_t").is_empty()


def test_editability_map_has_every_unit_method_and_strength(finished_run):
    run_dir, _ = finished_run
    table = _table(run_dir, "editability")
    methods = {unit: set(group["method"].to_list()) for (unit,), group in table.group_by(["unit"])}
    assert methods == {
        "down.2.1": {"oracle", "random", "sae"},
        "up.1.1": {"oracle", "random"},
        "pair": {"oracle", "random"},
    }
    assert set(table["strength"].to_list()) == {1.0, 4.0} and set(table["window"].to_list()) == {"early"}
    assert (table["clean_success"] <= table["success"]).all()
    best = _table(run_dir, "editability_best")
    assert best.height == best.select("unit", "attribute", "window", "method").unique().height
    assert best["best_strength"].is_in([1.0, 4.0]).all() and (best["prompts"] <= 2).all()


def test_layout_per_step_beside_its_baselines(finished_run):
    run_dir, _ = finished_run
    layout = _table(run_dir, "layout")
    steps = {
        model: set(group.filter(pl.col("method") == "probe")["step"].to_list())
        for (model,), group in layout.group_by(["model"])
    }
    assert steps == {"one": {0}, "multi": {0, 1}}
    baselines = layout.filter(pl.col("kind") == "baseline")
    assert set(baselines["method"].to_list()) == {"caption alone", "other seed"}
    assert set(layout.filter(pl.col("kind") == "dictionary")["model"].to_list()) == {"one"}
    assert layout["iou_foreground"].is_between(0, 1).all()


def test_training_convergence_for_every_dictionary(finished_run):
    run_dir, _ = finished_run
    summary = _table(run_dir, "training_summary")
    assert set(summary["dictionary"].to_list()) == {"sae", "itda"}
    assert set(summary["tokens"].to_list()) == {4096}
    curves = _table(run_dir, "training_curves")
    assert curves.filter(pl.col("dictionary") == "sae")["tokens"].max() == 4096


def test_windows_table_covers_every_style_and_window(finished_run):
    run_dir, _ = finished_run
    windows = _table(run_dir, "windows")
    assert set(windows["style"].to_list()) == {
        "sdlens",
        "tinaz_spatial",
        "tinaz_global",
        "flux_add",
        "oracle",
        "random",
    }
    assert set(windows.filter(pl.col("kind") == "dictionary")["style"].to_list()) == {
        "sdlens",
        "tinaz_spatial",
        "tinaz_global",
        "flux_add",
    }
    assert (windows["clean_success"] <= windows["success"]).all()
    # the dictionary styles edit the first style_prompts = 1 held-out prompt, oracle and random all 2
    scored = windows.filter(pl.col("split") == "score")
    per_kind = scored.group_by("kind").agg(pl.col("prompt_id").n_unique())
    assert dict(per_kind.iter_rows()) == {"dictionary": 1, "oracle": 2, "random": 2}
    # tuning prompts carry only the oracle rows the claims choose hooks by; every style is scored held out
    assert set(windows.filter(pl.col("split") == "tune")["style"].to_list()) == {"oracle"}
    assert set(windows.filter(pl.col("split") == "score")["style"].to_list()) == set(windows["style"].to_list())
    assert set(windows["window"].to_list()) == {"early", "all"}
    assert windows["success"].is_between(0, 1).all()
    # the 1-step model's only step (t = 1) lies in both windows (study_fixtures.TINY_WINDOWS)
    steps = dict(windows.select("window", "steps_in_window").unique().iter_rows())
    assert steps == {"early": 1, "all": 1}


def test_atlas_and_report(finished_run, tmp_path):
    run_dir, _ = finished_run
    atlas = _table(run_dir, "atlas")
    assert set(atlas["dictionary"].to_list()) == {"sae", "itda"}
    assert atlas.filter(pl.col("dictionary") == "itda")["provenance"].str.contains("atom from prompt").all()
    tiles = _table(run_dir, "atlas_tiles")
    per_feature = tiles.group_by("dictionary", "feature", "kind").len()
    # every card: its empty-prompt reference + one strength, and a five-strength modulation strip
    assert set(per_feature.filter(pl.col("kind") == "empty")["len"].to_list()) == {2}
    assert set(per_feature.filter(pl.col("kind") == "strip")["len"].to_list()) == {5}
    assert all(Image.open(p).size == (64, 64) for p in tiles["path"].to_list())  # tiny/sdxl's size; shown at 128 px
    report = run_dir / "report.html"
    marks, problems = report_problems(report)
    assert problems == [], problems
    assert marks["images-loaded"] >= len(tiles)
    # the claims, 3 transfer, 6 compare, windows, 2 editability, layout, 2 training, atlas
    assert marks["csv-total"] == 17
    text = report.read_text()
    for title in (
        "Cross-model transfer",
        "SAE vs ITDA",
        "Timestep-window interventions",
        "Editability map",
        "Layout from early steps",
        "Dictionary training",
        "Feature atlas",
    ):
        assert text.index(f"<b>{title}.</b>") < text.index('<section id="s0"')  # each study's findings up top
    assert text.count('class="card"') == atlas.height
    screenshot(report, tmp_path / "report_first_screen.png")


def test_atlas_command_renders_chosen_features(finished_run, capsys):
    run_dir, _ = finished_run
    assert (run_dir / "config.toml").exists() and (run_dir / "run.json").exists()
    assert main(["atlas", str(run_dir), "--dictionary", "itda", "--features", "1,0", "--device", "cpu"]) == 0
    page = run_dir / "atlas_itda_1_0.html"
    assert f"atlas: {page}" in capsys.readouterr().out
    text = page.read_text()
    assert text.count('class="card"') == 2 and text.index("itda #1") < text.index("itda #0")
    assert image_load_status(page)["broken"] == 0
    assert main(["atlas", str(run_dir), "--dictionary", "nope", "--features", "1"]) == 2
    assert "dictionaries: sae, itda" in capsys.readouterr().err


def test_rerun_resumes_without_recomputing(finished_run, capsys):
    run_dir, config = finished_run
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "tables").glob("*.parquet")}
    assert main(["run", str(config), "--no-progress", "--device", "cpu"]) == 0
    after = {p: p.stat().st_mtime_ns for p in (run_dir / "tables").glob("*.parquet")}
    assert before == after
    assert main(["study", str(config), "--only", "atlas", "--force", "--no-progress", "--device", "cpu"]) == 0
    assert (run_dir / "tables" / "atlas.parquet").stat().st_mtime_ns > before[run_dir / "tables" / "atlas.parquet"]


def test_windows_scored_with_clip_as_for_real_models(finished_run):
    run_dir, config = finished_run
    text = config.read_text().replace('edit_styles = ["sdlens"', 'scoring = "clip"\nedit_styles = ["sdlens"')
    clip_config = config.with_name("clip.toml")
    clip_config.write_text(text.replace(f'out = "{run_dir}"', f'out = "{run_dir.parent / "clip_run"}"'))
    import shutil

    shutil.copytree(run_dir / "stores", run_dir.parent / "clip_run" / "stores")
    shutil.copytree(run_dir / "fits", run_dir.parent / "clip_run" / "fits")
    assert main(["study", str(clip_config), "--only", "windows", "--no-progress", "--device", "cpu"]) == 0
    windows = pl.read_parquet(run_dir.parent / "clip_run" / "tables" / "windows.parquet")
    assert set(windows["scoring"].to_list()) == {"clip"}
    assert windows["preservation"].is_between(-1, 1).all()  # CLIP image similarity


def test_plain_text_prompts_use_clip_and_skip_concepts(tmp_path):
    """Real-model path on tiny inputs: prompts without ground truth."""
    config = write_tiny_study(
        tmp_path,
        **{
            'source = "toyworld"': 'source = "list"\nlist = ["a cat", "a dog", "a red car", "a blue house", "a tree", "a star"]',  # noqa: E501
            "count = 12": "count = 6",
            "eval_fraction = 0.34": "eval_fraction = 0.5",
            "edit_prompts = 2": "edit_prompts = 0",  # edits are judged against toy scenes
        },
    )
    text = config.read_text()
    text = text[: text.index("[studies.windows]")] + text[text.index("[studies.atlas]") :]  # windows need toy scenes
    config.write_text(text)
    assert main(["run", str(config), "--no-progress", "--device", "cpu"]) == 0
    splice = pl.read_parquet(tmp_path / "run" / "tables" / "transfer_splice.parquet")
    assert "clip_similarity" in splice.columns and "judge_agreement" not in splice.columns
    assert pl.read_parquet(tmp_path / "run" / "tables" / "compare_alignment.parquet").is_empty()
    atlas = pl.read_parquet(tmp_path / "run" / "tables" / "atlas.parquet")
    assert atlas.height > 0 and image_load_status(tmp_path / "run" / "report.html")["broken"] == 0
