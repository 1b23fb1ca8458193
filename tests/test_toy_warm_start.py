"""`diffdict toy import-weights` turns the shipped folders back into a training work dir."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffdict.studies.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "toyworld" / "weights"
COMPONENTS = (
    "sdxl-base/unet",
    "sdxl-base/text_encoder_2",
    "sdxl-base/vae",
    "sdxl-turbo/unet",
    "flux/transformer",
    "flux/text_encoder_2",
    "flux/vae",
)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_imported_weights_export_to_the_shipped_pipelines(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    assert main(["toy", "import-weights", "--weights", str(SHIPPED), "--work-dir", str(work)]) == 0
    assert (
        main(["toy", "train", "--work-dir", str(work), "--out-dir", str(out), "--stages", "export", "--no-progress"])
        == 0
    )
    for component in COMPONENTS:
        shipped, exported = _weights(SHIPPED / component), _weights(out / component)
        assert shipped.keys() == exported.keys(), component
        for key in shipped:
            assert torch.equal(shipped[key], exported[key]), f"{component}: {key}"
    for name in ("sdxl-base", "flux"):
        shipped_config = json.loads((SHIPPED / name / "vae" / "config.json").read_text())
        exported_config = json.loads((out / name / "vae" / "config.json").read_text())
        assert exported_config["scaling_factor"] == shipped_config["scaling_factor"]


def test_continued_stages_become_warm_starts_and_a_used_work_dir_is_refused(tmp_path):
    work = tmp_path / "work"
    assert (
        main(["toy", "import-weights", "--weights", str(SHIPPED), "--work-dir", str(work), "--continue", "base,flux"])
        == 0
    )
    assert (work / "base.init.safetensors").exists() and not (work / "base.safetensors").exists()
    assert (work / "flux.init.safetensors").exists() and (work / "turbo.safetensors").exists()
    # Flux's frozen encoders (text_pretrain) come from the shipped flux folder.
    text, flux = load_file(str(work / "text.safetensors")), load_file(str(work / "flux.init.safetensors"))
    assert torch.equal(text["flux_text_encoder_2.shared.weight"], flux["text_encoder_2.shared.weight"])
    before = (work / "turbo.safetensors").read_bytes()
    assert main(["toy", "import-weights", "--weights", str(SHIPPED), "--work-dir", str(work)]) == 2
    assert (work / "turbo.safetensors").read_bytes() == before
    assert main(["toy", "import-weights", "--work-dir", str(tmp_path / "w2"), "--continue", "unet"]) == 2
