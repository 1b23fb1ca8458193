"""The prefix cache: steps before an edit's window are served from the unedited generation, exactly."""

from __future__ import annotations

import pytest
import torch

from diffdict.adapters import AddDirection
from diffdict.adapters.prefix_cache import PrefixCache

PROMPTS = ["a red circle on the left", "a blue square on the right"]
SEEDS = [3, 4]


def _hook(adapter) -> str:
    return "down.2.1" if "down.2.1" in adapter.hook_points else "single.0"


def _block_calls(adapter) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """A counter of the denoiser's real runs (its hook block runs only when the denoiser does)."""
    calls = []
    module = dict(adapter.denoiser.named_modules())[adapter.hook_points[_hook(adapter)].module_path]
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


def _edit(adapter, steps: list[int]) -> AddDirection:
    hook = _hook(adapter)
    # a random direction: a constant one would vanish in the next block's normalisation
    direction = torch.randn(adapter.hook_points[hook].d, generator=torch.Generator().manual_seed(0))
    return AddDirection(hook, direction=direction, strength=10.0, steps=steps)


def _images(generation) -> list[bytes]:
    return [image.tobytes() for image in generation.images]


@pytest.mark.parametrize("fixture", ["tiny_sdxl", "tiny_flux"])
def test_a_late_edit_reuses_the_unedited_steps_and_matches_a_full_run(fixture, request):
    adapter = request.getfixturevalue(fixture)
    guidance = 5.0 if fixture == "tiny_sdxl" else 0.0  # SDXL: one CFG batch of uncond and cond rows
    run = {"seeds": SEEDS, "steps": 4, "guidance": guidance}
    cache = PrefixCache()
    unedited = adapter.generate(PROMPTS, prefix_cache=cache, **run)
    rows_per_step = len(PROMPTS) * (2 if fixture == "tiny_sdxl" else 1)
    assert len(cache) == 4 * rows_per_step and cache.hits == 0

    late = [_edit(adapter, steps=[2, 3])]
    full = adapter.generate(PROMPTS, interventions=late, **run)
    calls, handle = _block_calls(adapter)
    try:
        reused = adapter.generate(PROMPTS, interventions=late, prefix_cache=cache, **run)
    finally:
        handle.remove()
    assert _images(reused) == _images(full) != _images(unedited)
    assert cache.hits == 2 and len(calls) == 2  # steps 0 and 1 served, only the edited steps ran
    assert "forward" not in adapter.denoiser.__dict__  # the class's forward is back


def test_nothing_after_an_edit_is_served_or_recorded(tiny_sdxl):
    run = {"seeds": SEEDS, "steps": 4, "guidance": 5.0}
    cache = PrefixCache()
    adapter_unedited = tiny_sdxl.generate(PROMPTS, prefix_cache=cache, **run)
    held = len(cache)
    early = [_edit(tiny_sdxl, steps=[0])]
    full = tiny_sdxl.generate(PROMPTS, interventions=early, **run)
    edited = tiny_sdxl.generate(PROMPTS, interventions=early, prefix_cache=cache, **run)
    # steps 1-3 carry the same keys as the unedited run's, but their latents were edited at step 0
    assert _images(edited) == _images(full) != _images(adapter_unedited)
    assert cache.hits == 0 and len(cache) == held


def test_other_seeds_and_captured_steps_run_the_denoiser(tiny_sdxl):
    run = {"steps": 3, "guidance": 5.0}
    cache = PrefixCache()
    tiny_sdxl.generate(PROMPTS, seeds=SEEDS, prefix_cache=cache, **run)
    tiny_sdxl.generate(PROMPTS, seeds=[7, 8], prefix_cache=cache, **run)
    assert cache.hits == 0  # another seed is another trajectory
    captured = tiny_sdxl.generate(
        PROMPTS, seeds=SEEDS, hooks=["down.2.1"], capture_steps=[1], prefix_cache=cache, **run
    )
    assert cache.hits == 2  # steps 0 and 2; step 1 ran to be captured
    assert [m.step for m in captured.maps(hook="down.2.1", branch="cond")] == [1]


def test_a_full_cache_stops_recording(tiny_sdxl):
    cache = PrefixCache(max_bytes=1)
    tiny_sdxl.generate(PROMPTS, seeds=SEEDS, steps=2, guidance=5.0, prefix_cache=cache)
    assert len(cache) == 0 and cache.bytes == 0
