"""SDXL's CFG row order, checked against runs that need no labelling at all.

With guidance the pipeline batches [uncond rows, cond rows] and the adapter labels them
(`SDXLAdapter._row_branches`). The other capture tests compare those labels with themselves; here
each labelled branch is compared with a run of that branch's prompt alone, without guidance, where
the batch holds one branch and no order can be wrong. At step 0 both CFG halves see the same latent
and timestep, so the guided run's cond rows must be what the model computes for the prompt alone,
and its uncond rows what it computes for the negative prompt alone.
"""

from __future__ import annotations

import torch

PROMPT, NEGATIVE = "a red circle on the left", "a blue square at the top"
HOOKS = ["down.2.1", "up.0.1"]


def _step0(generation, hook: str, branch: str) -> torch.Tensor:
    (found,) = [m for m in generation.maps(hook=hook) if m.step == 0 and m.branch == branch]
    return found.value


def test_guided_rows_match_each_branch_run_alone(tiny_sdxl):
    guided = tiny_sdxl.generate(
        [PROMPT], seeds=[5], hooks=HOOKS, steps=2, guidance=5.0, capture_steps=[0], negative_prompt=[NEGATIVE]
    )
    prompt_alone = tiny_sdxl.generate([PROMPT], seeds=[5], hooks=HOOKS, steps=2, guidance=0.0, capture_steps=[0])
    negative_alone = tiny_sdxl.generate([NEGATIVE], seeds=[5], hooks=HOOKS, steps=2, guidance=0.0, capture_steps=[0])
    for hook in HOOKS:
        cond, uncond = _step0(guided, hook, "cond"), _step0(guided, hook, "uncond")
        # the two prompts must give clearly different rows, or a swap would go unnoticed
        gap = (cond - uncond).abs().max()
        assert gap > 100 * 1e-5 * cond.abs().max(), f"{hook}: cond and uncond rows barely differ ({gap})"
        torch.testing.assert_close(cond, _step0(prompt_alone, hook, "cond"), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(uncond, _step0(negative_alone, hook, "cond"), rtol=1e-4, atol=1e-5)
