"""The feature atlas on a Flux-style model (tiny/flux), with both dictionary architectures."""

from __future__ import annotations

import polars as pl
from PIL import Image

from diffdict.analysis.browser import image_load_status
from diffdict.studies.cli import main
from study_fixtures import write_tiny_study


def test_atlas_on_flux_for_sae_and_itda(tmp_path):
    config = write_tiny_study(tmp_path, **{'id = "tiny/sdxl"': 'id = "tiny/flux"', '"down.2.1"': '"double.0"'})
    text = config.read_text()
    # Only what the atlas needs: the Flux model entry, both dictionaries, the atlas study.
    text = text[: text.index("[studies.transfer]")] + text[text.index("[studies.atlas]") :]
    config.write_text(text.replace("top_features = 3", "top_features = 2"))
    assert main(["run", str(config), "--no-progress", "--device", "cpu"]) == 0
    run_dir = tmp_path / "run"
    atlas = pl.read_parquet(run_dir / "tables" / "atlas.parquet")
    assert set(atlas["dictionary"].to_list()) == {"sae", "itda"}
    tiles = pl.read_parquet(run_dir / "tables" / "atlas_tiles.parquet")
    assert set(tiles["kind"].to_list()) == {"top", "empty", "strip"}
    strip = tiles.filter((pl.col("kind") == "strip") & (pl.col("dictionary") == "sae"))
    images = [Image.open(p).convert("RGB") for p in strip["path"].to_list()[:5]]
    assert all(im.size == (64, 64) for im in images)  # tiny/flux's own size; the page shows 128 px
    assert images[0].tobytes() != images[-1].tobytes()  # -4x and +8x of the feature draw differently
    assert image_load_status(run_dir / "report.html")["broken"] == 0
