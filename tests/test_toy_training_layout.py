"""toyworld keeps the world; the training lab is toyworld/training: an explicit stage table, no
import cycles, no calls to diffusers' private names, and the world never imports the lab."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "toyworld" / "training"


def _imports(path: Path) -> set[str]:
    """diffdict.toyworld.* modules a file imports (at any depth: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffdict.toyworld"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("diffdict.toyworld"))
    modules = {f"diffdict.toyworld.training.{p.stem}" for p in TRAINING.glob("*.py")} | {
        f"diffdict.toyworld.{p.stem}" for p in (REPO / "toyworld").glob("*.py")
    }
    return {name for name in found if name in modules}


def test_the_training_modules_import_without_cycles():
    graph = {f"diffdict.toyworld.training.{p.stem}": _imports(p) for p in TRAINING.glob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(path + [module])}"
        state[module] = "open"
        for child in graph.get(module, ()):
            visit(child, path + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_the_world_never_imports_the_training_lab():
    for path in (REPO / "toyworld").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("diffdict.toyworld.training")}, path.name
    code = (
        "import sys, diffdict.toyworld.scenes, diffdict.toyworld.render, diffdict.toyworld.judge, "
        "diffdict.toyworld.errors, diffdict.toyworld.eval; "
        "print(any(m.startswith('diffdict.toyworld.training') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.stdout.strip() == "False", result.stderr


def test_no_private_diffusers_names():
    private = re.compile(r"(Pipeline|pipe)\._[a-z]")
    for path in [*TRAINING.glob("*.py"), *(REPO / "toyworld").glob("*.py")]:
        assert not private.search(path.read_text()), path


def test_the_stage_table_is_the_stage_names_in_order():
    from diffdict.toyworld.training.config import STAGES
    from diffdict.toyworld.training.stages import STAGE_TABLE

    assert tuple(stage.name for stage in STAGE_TABLE) == STAGES
    assert [stage.name for stage in STAGE_TABLE if not stage.checkpointed] == ["export"]


def test_our_flux_packing_matches_the_pipeline():
    from diffusers import FluxPipeline

    from diffdict.toyworld.training import models

    latents = torch.randn(3, 16, 16, 16)
    packed = models.pack_latents(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 3, 16, 16, 16))
    assert torch.equal(models.unpack_latents(packed, 16, 16), latents)
    assert torch.equal(models.unpack_latents(packed, 16, 16), FluxPipeline._unpack_latents(packed, 64, 64, 4))
    assert torch.equal(
        models.latent_image_ids(8, 8, "cpu"), FluxPipeline._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
    )
