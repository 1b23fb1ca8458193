"""`diffdict generate`: the quickstart's command prints every captured map and writes the images."""

from __future__ import annotations

from PIL import Image

from diffdict.studies.cli import main


def test_generate_prints_captured_maps_and_writes_images(tmp_path, capsys):
    code = main(
        [
            "generate",
            "tiny/sdxl",
            "a red circle",
            "a blue square",
            "--hooks",
            "down.2.1,mid.0",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("down.2.1", "mid.0"))]
    assert len(rows) == 2 * 2 * 2  # hooks x steps x branches
    assert "(2, 8, 8, 32)" in rows[0]
    images = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in images] == ["000_seed0.png", "001_seed1.png"]
    assert Image.open(images[0]).size == (64, 64)


def test_generate_unknown_hook_exits_2_and_lists_valid_hooks(tmp_path, capsys):
    assert main(["generate", "tiny/flux", "x", "--hooks", "double.9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown hook 'double.9'" in err and "double.1" in err and "single.0.txt" in err
    assert not list(tmp_path.glob("*.png"))


def test_generate_nf4_on_sdxl_exits_2(tmp_path, capsys):
    assert main(["generate", "tiny/sdxl", "x", "--quantize", "nf4", "--out", str(tmp_path)]) == 2
    assert "Flux models only" in capsys.readouterr().err
