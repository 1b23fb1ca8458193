"""Interventions through forward hooks: masks, time windows, branch rules, dictionaries, cleanup."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from diffdict.adapters import AddDirection, EditFeatures, FeatureOp, RowFeatureEdits, SkipBlock, Splice

PROMPT = ["a red circle on the left"]
HOOK = "down.2.1"


class OrthoDictionary:
    """A complete orthonormal dictionary with top-k coding: exact when k = d."""

    def __init__(self, d: int, k: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.atoms = torch.linalg.qr(torch.randn(d, d, generator=generator))[0].T.contiguous()  # (n=d, d)
        self.k = k

    def encode(self, x):
        coefficients = x @ self.atoms.T
        _, indices = coefficients.abs().topk(self.k, dim=-1)
        return SimpleNamespace(values=coefficients.gather(-1, indices), indices=indices)

    def decode(self, code):
        return (code.values.unsqueeze(-1) * self.atoms[code.indices]).sum(dim=1)


def _run(adapter, interventions=(), **kw):
    kw.setdefault("steps", 2)
    kw.setdefault("guidance", 5.0)
    return adapter.generate(PROMPT, seeds=[11], hooks=[HOOK], interventions=interventions, **kw)


@pytest.fixture(scope="module")
def baseline(tiny_sdxl):
    return _run(tiny_sdxl)


def _diff(gen, base, step, branch):
    return (
        gen.maps(hook=HOOK, step=step, branch=branch)[0].value - base.maps(hook=HOOK, step=step, branch=branch)[0].value
    )


def test_add_direction_on_a_mask_changes_exactly_the_masked_cells(tiny_sdxl, baseline):
    direction = torch.randn(32)
    mask = torch.zeros(8, 8)
    mask[2:5, 1:4] = 1.0
    gen = _run(tiny_sdxl, [AddDirection(HOOK, mask=mask, direction=direction, strength=2.0, steps=[0])])
    diff = _diff(gen, baseline, step=0, branch="cond")[0]  # (8, 8, 32)
    torch.testing.assert_close(diff[2:5, 1:4], (2.0 * direction).expand(3, 3, 32), atol=1e-5, rtol=1e-5)
    assert diff[mask == 0].abs().max() < 1e-6
    assert _diff(gen, baseline, step=0, branch="uncond").abs().max() < 1e-6  # default branch rule: cond only
    assert gen.images[0].tobytes() != baseline.images[0].tobytes()


def test_cond_plus_uncond_minus_subtracts_on_uncond(tiny_sdxl, baseline):
    direction = torch.randn(32)
    gen = _run(tiny_sdxl, [AddDirection(HOOK, direction=direction, strength=1.5, branch="cond+uncond-", steps=[0])])
    torch.testing.assert_close(_diff(gen, baseline, 0, "cond")[0, 0, 0], 1.5 * direction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_diff(gen, baseline, 0, "uncond")[0, 0, 0], -1.5 * direction, atol=1e-5, rtol=1e-5)


def test_step_window_leaves_other_steps_alone(tiny_sdxl, baseline):
    gen = _run(tiny_sdxl, [SkipBlock(HOOK, steps=[1], branch="both")])
    assert _diff(gen, baseline, 0, "cond").abs().max() == 0
    assert gen.maps(hook=HOOK, step=1, branch="cond")[0].value.abs().max() == 0  # skipped: no update at all
    assert gen.maps(hook=HOOK, step=1, branch="uncond")[0].value.abs().max() == 0


def test_t_window_selects_steps_by_normalised_time(tiny_sdxl, baseline):
    gen = _run(tiny_sdxl, [SkipBlock(HOOK, t_range=(0.9, 1.0))])  # step 0 has t = 1
    assert gen.maps(hook=HOOK, step=0, branch="cond")[0].value.abs().max() == 0
    assert gen.maps(hook=HOOK, step=0, branch="uncond")[0].value.abs().max() > 0


def test_interventions_compose_in_order(tiny_sdxl, baseline):
    a, b = torch.randn(32), torch.randn(32)
    gen = _run(
        tiny_sdxl, [AddDirection(HOOK, direction=a, steps=[0]), AddDirection(HOOK, direction=b, strength=-2, steps=[0])]
    )
    torch.testing.assert_close(_diff(gen, baseline, 0, "cond")[0, 3, 3], a - 2 * b, atol=1e-5, rtol=1e-5)


def test_edit_features_set_and_zero_move_only_the_named_features(tiny_sdxl, baseline):
    dictionary = OrthoDictionary(32, k=32)
    gen = _run(
        tiny_sdxl,
        [
            EditFeatures(HOOK, steps=[0], dictionary=dictionary, features=[3], mode="set", value=4.0),
            EditFeatures(HOOK, steps=[0], dictionary=dictionary, features=[5], mode="zero"),
        ],
    )
    before = baseline.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    after = gen.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    torch.testing.assert_close(after[:, 3], torch.full_like(after[:, 3], 4.0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after[:, 5], torch.zeros_like(after[:, 5]), atol=1e-4, rtol=1e-4)
    others = [i for i in range(32) if i not in (3, 5)]
    torch.testing.assert_close(after[:, others], before[:, others], atol=1e-4, rtol=1e-4)


def test_edit_features_scale(tiny_sdxl, baseline):
    dictionary = OrthoDictionary(32, k=32)
    gen = _run(
        tiny_sdxl, [EditFeatures(HOOK, steps=[0], dictionary=dictionary, features=[0, 1], mode="scale", value=3.0)]
    )
    before = baseline.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    after = gen.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    torch.testing.assert_close(after[:, :2], 3.0 * before[:, :2], atol=1e-4, rtol=1e-4)


def test_splice_with_an_exact_dictionary_changes_nothing_and_a_lossy_one_does(tiny_sdxl, baseline):
    exact = _run(tiny_sdxl, [Splice(HOOK, dictionary=OrthoDictionary(32, k=32), branch="both")])
    lossy = _run(tiny_sdxl, [Splice(HOOK, dictionary=OrthoDictionary(32, k=2), branch="both")])
    for a, b in zip(exact.captures, baseline.captures):
        torch.testing.assert_close(a.value, b.value, atol=1e-4, rtol=1e-4)
    assert _diff(lossy, baseline, 0, "cond").abs().max() > 1e-2


def test_hooks_are_removed_when_generation_raises(tiny_sdxl, baseline):
    class Boom(SkipBlock):
        def edit(self, update):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(tiny_sdxl, [Boom(HOOK)])
    modules = [tiny_sdxl.denoiser, *tiny_sdxl.denoiser.modules()]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)
    again = _run(tiny_sdxl)
    assert again.images[0].tobytes() == baseline.images[0].tobytes()


def test_mask_shape_mismatch_names_both_shapes(tiny_sdxl):
    with pytest.raises(ValueError, match=r"mask shape \(16, 16\).*grid \(8, 8\)"):
        _run(tiny_sdxl, [SkipBlock(HOOK, mask=torch.ones(16, 16))])


def test_window_outside_the_steps_or_unit_interval_is_refused(tiny_sdxl):
    with pytest.raises(ValueError, match=r"steps \[5\] are outside this generation's 2 steps"):
        _run(tiny_sdxl, [SkipBlock(HOOK, steps=[0, 5])])
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        SkipBlock(HOOK, t_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="branch"):
        SkipBlock(HOOK, branch="negative")


def test_flux_interventions_on_image_and_text_streams(tiny_flux):
    base = tiny_flux.generate(PROMPT, hooks=["double.1", "double.1.txt"], steps=2)
    direction = torch.randn(32)
    mask = torch.zeros(16, 16)
    mask[:4] = 1
    gen = tiny_flux.generate(
        PROMPT,
        hooks=["double.1", "double.1.txt"],
        steps=2,
        interventions=[
            AddDirection("double.1", mask=mask, direction=direction, steps=[0]),
            SkipBlock("double.1.txt", steps=[0]),
        ],
    )
    diff = gen.maps(hook="double.1", step=0)[0].value - base.maps(hook="double.1", step=0)[0].value
    torch.testing.assert_close(diff[0, :4], direction.expand(4, 16, 32), atol=1e-5, rtol=1e-5)
    assert diff[0, 4:].abs().max() < 1e-6
    assert gen.maps(hook="double.1.txt", step=0)[0].value.abs().max() == 0


def test_edit_features_add_relative_to_the_local_code_norm(tiny_sdxl, baseline):
    dictionary = OrthoDictionary(32, k=32)
    gen = _run(
        tiny_sdxl,
        [
            EditFeatures(
                HOOK, steps=[0], dictionary=dictionary, features=[7], mode="add", value=0.5, relative_to_code_norm=True
            )
        ],
    )
    before = baseline.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    after = gen.maps(hook=HOOK, step=0, branch="cond")[0].value.reshape(-1, 32) @ dictionary.atoms.T
    # an orthonormal complete code has the norm of the update itself
    torch.testing.assert_close(after[:, 7], before[:, 7] + 0.5 * before.norm(dim=-1), atol=1e-4, rtol=1e-4)


def test_per_prompt_masks_edit_each_prompt_in_its_own_place(tiny_sdxl):
    prompts = ["a red circle", "a blue square"]
    base = tiny_sdxl.generate(prompts, seeds=[1, 2], hooks=[HOOK], steps=1, guidance=5.0)
    masks = torch.zeros(2, 8, 8)
    masks[0, 0, 0] = 1
    masks[1, 7, 7] = 1
    direction = torch.randn(32)
    gen = tiny_sdxl.generate(
        prompts,
        seeds=[1, 2],
        hooks=[HOOK],
        steps=1,
        guidance=5.0,
        interventions=[AddDirection(HOOK, mask=masks, direction=direction)],
    )
    diff = gen.maps(branch="cond")[0].value - base.maps(branch="cond")[0].value  # (2, 8, 8, 32)
    changed = diff.abs().amax(dim=-1) > 1e-6
    assert changed[0].nonzero().tolist() == [[0, 0]] and changed[1].nonzero().tolist() == [[7, 7]]
    with pytest.raises(ValueError, match="3 masks for 2 prompts"):
        tiny_sdxl.generate(prompts, steps=1, interventions=[SkipBlock(HOOK, mask=torch.ones(3, 8, 8))])


def test_row_feature_edits_match_one_edit_features_per_prompt_from_one_encode():
    """The windows study's packed edit: each row's ops equal that row's own EditFeatures (with its mask),
    and the dictionary encodes the batch once."""
    dictionary = OrthoDictionary(16, k=6, seed=3)
    calls = []
    encode = dictionary.encode
    dictionary.encode = lambda x: calls.append(x.shape[0]) or encode(x)
    update = torch.randn(3, 4, 4, 16, generator=torch.Generator().manual_seed(0))
    cells = [torch.zeros(4, 4) for _ in range(3)]
    cells[0][:2] = 1.0
    cells[2][:, 1:] = 0.5
    ops = [
        FeatureOp(0, 2, "zero", cells[0]),
        FeatureOp(1, 5, "set", torch.ones(4, 4), 3.0),
        FeatureOp(2, 7, "add", cells[2], 1.5, relative_to_code_norm=True),
    ]
    packed = RowFeatureEdits(HOOK, dictionary=dictionary, ops=ops).change(update)
    assert calls == [3 * 16]  # one encode of the whole batch
    for op in ops:
        mask = torch.zeros(3, 4, 4)
        mask[op.row] = op.cells
        single = EditFeatures(
            HOOK,
            mask=mask,
            dictionary=dictionary,
            features=[op.feature],
            mode=op.mode,
            value=op.value,
            relative_to_code_norm=op.relative_to_code_norm,
        ).change(update)
        torch.testing.assert_close(packed[op.row], single[op.row], atol=1e-5, rtol=1e-5)
