"""Capture: maps per hook, per denoiser call, per branch, tagged with step / timestep / t."""

from __future__ import annotations

import torch

PROMPTS = ["a red circle on the left", "a large blue square"]


def test_multistep_cfg_capture_has_both_branches_every_step(tiny_sdxl):
    gen = tiny_sdxl.generate(PROMPTS, seeds=[3, 4], hooks=["down.2.1", "up.0.1"], steps=3, guidance=5.0)
    assert len(gen.images) == 2 and gen.images[0].size == (64, 64)
    assert len(gen.captures) == 2 * 3 * 2  # hooks x steps x branches
    for hook in ("down.2.1", "up.0.1"):
        for branch in ("cond", "uncond"):
            maps = gen.maps(hook=hook, branch=branch)
            assert [m.step for m in maps] == [0, 1, 2]
            assert all(m.value.shape == (2, 8, 8, 32) for m in maps)
            ts = [m.t for m in maps]
            assert ts[0] == 1.0 and ts == sorted(ts, reverse=True) and all(0 <= t <= 1 for t in ts)
    assert gen.stacked("down.2.1").shape == (3, 2, 8, 8, 32)


def test_one_step_without_guidance_has_only_cond(tiny_sdxl):
    gen = tiny_sdxl.generate(PROMPTS[:1], hooks=["mid.0"], steps=1, guidance=0.0)
    assert [(m.step, m.branch) for m in gen.captures] == [(0, "cond")]
    assert gen.captures[0].value.shape == (1, 8, 8, 32)


def test_update_is_block_output_minus_input(tiny_sdxl):
    module = tiny_sdxl.denoiser.get_submodule(tiny_sdxl.hook_point("down.2.1").module_path)
    seen = []

    def spy(mod, args, kwargs, output):
        seen.append((args[0].clone(), output[0].clone()))

    handle = module.register_forward_hook(spy, with_kwargs=True)
    try:
        update = tiny_sdxl.generate(PROMPTS[:1], hooks=["down.2.1"], steps=1, guidance=0.0)
        output = tiny_sdxl.generate(PROMPTS[:1], hooks=["down.2.1"], steps=1, guidance=0.0, capture="output")
    finally:
        handle.remove()
    inp, out = seen[0]
    torch.testing.assert_close(update.captures[0].value, (out - inp).permute(0, 2, 3, 1))
    torch.testing.assert_close(output.captures[0].value, out.permute(0, 2, 3, 1))


def test_rows_follow_prompts_in_any_batch(tiny_sdxl):
    together = tiny_sdxl.generate(PROMPTS, seeds=[7, 8], hooks=["mid.0"], steps=2, guidance=5.0)
    alone = tiny_sdxl.generate(PROMPTS[1:], seeds=[8], hooks=["mid.0"], steps=2, guidance=5.0)
    for branch in ("cond", "uncond"):
        torch.testing.assert_close(
            together.stacked("mid.0", branch)[:, 1], alone.stacked("mid.0", branch)[:, 0], atol=1e-4, rtol=1e-4
        )


def test_same_prompts_and_seeds_give_identical_images_and_captures(tiny_sdxl):
    first = tiny_sdxl.generate(PROMPTS, seeds=[1, 2], hooks=["down.2.1"], steps=2)
    second = tiny_sdxl.generate(PROMPTS, seeds=[1, 2], hooks=["down.2.1"], steps=2)
    other = tiny_sdxl.generate(PROMPTS, seeds=[5, 6], hooks=["down.2.1"], steps=2)
    for a, b in zip(first.images, second.images):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(first.captures, second.captures):
        assert torch.equal(a.value, b.value)
    assert first.images[0].tobytes() != other.images[0].tobytes()


def test_capture_steps_filter(tiny_sdxl):
    gen = tiny_sdxl.generate(PROMPTS[:1], hooks=["mid.0"], steps=3, capture_steps=[2])
    assert {m.step for m in gen.captures} == {2}


def test_flux_image_tokens_are_reshaped_to_the_latent_grid(tiny_flux):
    gen = tiny_flux.generate(PROMPTS, seeds=[0, 1], hooks=["double.1", "single.0", "double.0.txt"])
    image = gen.maps(hook="double.1")
    assert [m.step for m in image] == [0, 1, 2, 3]
    assert all(m.branch == "cond" and m.value.shape == (2, 16, 16, 32) for m in image)
    assert [round(m.t, 3) for m in image] == [1.0, 0.75, 0.5, 0.25]  # flow-matching sigmas
    assert gen.maps(hook="double.0.txt")[0].value.shape == (2, 1, 16, 32)


def test_flux_token_order_is_row_major(tiny_flux):
    block = tiny_flux.denoiser.get_submodule("transformer_blocks.1")
    seen = []
    handle = block.register_forward_hook(lambda m, a, k, o: seen.append((k["hidden_states"], o[1])), with_kwargs=True)
    try:
        gen = tiny_flux.generate(PROMPTS[:1], hooks=["double.1"], steps=1)
    finally:
        handle.remove()
    inp, out = seen[0]
    tokens = (out - inp)[0]  # (256, d)
    grid = gen.captures[0].value[0]  # (16, 16, d)
    torch.testing.assert_close(grid[2, 5], tokens[2 * 16 + 5])


def test_flux_true_cfg_captures_an_uncond_call_per_step(tiny_flux):
    gen = tiny_flux.generate(PROMPTS[:1], hooks=["double.0"], steps=2, guidance=3.0, negative_prompt=[""])
    assert [(m.step, m.branch) for m in gen.captures] == [(0, "cond"), (0, "uncond"), (1, "cond"), (1, "uncond")]
