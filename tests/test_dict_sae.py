"""Top-k SAE: the hand-written step equals autograd, the recipe learns, AuxK revives, persistence is exact."""

from __future__ import annotations

import json

import pytest
import torch

from dict_fixtures import one_thread, planted_atoms, planted_data  # noqa: F401 (fixture)
from diffdict.dictionaries import base
from diffdict.dictionaries.metrics import evaluate
from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig, geometric_median
from diffdict.dictionaries.unbox_import import import_unbox

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_loss(params, x, k, dead, k_aux, aux_coef, mse_scale):
    """sdxl-unbox's loss written with dense autograd (their train_sae.py recipe)."""
    W_enc, b_enc, W_dec, b_dec = params
    pre = (x - b_dec) @ W_enc.t() + b_enc
    vals, idx = pre.topk(k, dim=1)
    code = torch.zeros_like(pre).scatter(1, idx, vals.relu())
    recons = code @ W_dec + b_dec
    loss = mse_scale * (recons - x).pow(2).mean()
    # AuxK as sdxl-unbox applies it, dead latents or not: live pre-activations are zeroed (not
    # removed), the top k_aux taken, relu'd and decoded with b_dec.
    masked = pre * dead
    a_vals, a_idx = masked.topk(min(k_aux, pre.shape[1]), dim=1)
    aux = torch.zeros_like(pre).scatter(1, a_idx, a_vals.relu()) @ W_dec + b_dec
    target = x - recons.detach() + b_dec.detach()
    normalised = (aux - target).pow(2).mean() / (target.mean(0) - target).pow(2).mean()
    return loss + aux_coef * normalised


@pytest.mark.parametrize("n_dead,k_aux", [(6, 4), (24, 2), (0, 4)])  # dense AuxK path, sparse path, none dead
def test_sparse_step_gradients_equal_autograd(n_dead, k_aux):
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d=12, n=48, k=3, k_aux=k_aux, dead_tokens=10**6))
    x = torch.randn(64, 12)
    sae.initialize(x)
    sae.b_enc = torch.randn(48) * 0.1
    dead = torch.zeros(48, dtype=torch.bool)
    dead[torch.randperm(48)[:n_dead]] = True
    sae.b_enc[dead] -= 2.5  # starved latents: rarely in the top k, sometimes positive
    params = [p.clone().requires_grad_() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    with torch.no_grad():  # the latents that fire in this batch stop being dead, as in the step
        fired = torch.zeros(48, dtype=torch.bool)
        top = ((x - sae.b_dec) @ sae.W_enc.t() + sae.b_enc).topk(3, dim=1)
        fired[top.indices[top.values > 1e-3]] = True
    sae.tokens_since_fired = torch.where(dead, 10**6, 0)
    loss = reference_loss(params, x, 3, dead & ~fired, k_aux, 1 / 32, sae.mse_scale)
    expected = torch.autograd.grad(loss, params)
    W_dec = params[2].detach()
    along = (expected[2] * W_dec).sum(1, keepdim=True)  # decoder upkeep: no component along the rows
    expected = [expected[0], expected[1], expected[2] - along * W_dec, expected[3]]

    captured = {}
    sae.adam_step = lambda grads: captured.setdefault("grads", [g.clone() for g in grads])
    stats = sae.train_step(x)
    assert stats.aux_loss > 0
    assert abs(stats.loss - loss.item()) < 1e-4 * max(1.0, loss.item())
    for name, got, want in zip(("W_enc", "b_enc", "W_dec", "b_dec"), captured["grads"], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
    if n_dead == 0:  # the term that pulls b_dec toward the mean residual is there
        without = torch.autograd.grad(reference_loss(params, x, 3, dead, 0, 0.0, sae.mse_scale), params[3])[0]
        assert (captured["grads"][3] - without).norm() > 1e-3 * without.norm()


def test_recovers_planted_atoms():
    torch.manual_seed(0)
    atoms = planted_atoms(48, 32, seed=0)
    x = planted_data(atoms, 512 * 300, active=3, seed=1)
    sae = TopKSAE(TopKSAEConfig(d=32, n=64, k=3, lr=1e-3, dead_tokens=20_000, k_aux=32))
    sae.fit(x.split(512))
    learned = sae.atoms / sae.atoms.norm(dim=1, keepdim=True)
    best_cosine = (atoms @ learned.t()).max(1).values
    assert float((best_cosine >= 0.9).float().mean()) >= 0.9, best_cosine
    assert evaluate(sae, [planted_data(atoms, 2048, 3, seed=5)])["fvu"] < 0.05


def test_auxk_lowers_dead_fraction():
    atoms = planted_atoms(128, 32, seed=0)
    scale = torch.ones(32)
    scale[:4] = 8.0  # an anisotropic stream kills features, as Flux's does
    x = planted_data(atoms, 256 * 300, 4, seed=1, noise=0.05) * scale
    held_out = planted_data(atoms, 4096, 4, seed=2, noise=0.05) * scale
    dead = {}
    for k_aux in (0, 64):
        sae = TopKSAE(TopKSAEConfig(d=32, n=128, k=4, lr=1e-3, dead_tokens=2560, k_aux=k_aux, seed=3))
        sae.fit(x.split(256))
        dead[k_aux] = evaluate(sae, [held_out])["dead_fraction"]
    assert dead[64] < 0.5 * dead[0] and dead[0] > 0.05, dead


@pytest.mark.parametrize("input_norm", ["none", "standardize", "whiten"])
def test_save_load_round_trip_is_exact(tmp_path, input_norm):
    torch.manual_seed(1)
    x = torch.randn(512, 16) * torch.linspace(0.1, 5, 16) + 3
    sae = base.create("topk_sae", d=16, n=40, k=4, input_norm=input_norm, dead_tokens=256)
    sae.fit(x.split(128))
    sae.save(tmp_path / "sae", training_state=True)
    loaded = base.load(tmp_path / "sae", training_state=True)
    assert (
        isinstance(loaded, TopKSAE)
        and json.loads((tmp_path / "sae" / "config.json").read_text())["architecture"] == "topk_sae"
    )
    for name, tensor in sae.tensors().items():
        assert torch.equal(tensor, loaded.tensors()[name]), name
    a, b = sae.encode(x), loaded.encode(x)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    assert torch.equal(sae.decode(a), loaded.decode(b))
    # continuing training from the saved state gives the same parameters as not stopping
    sae.partial_fit(x[:128])
    loaded.partial_fit(x[:128])
    assert isinstance(sae, TopKSAE) and isinstance(loaded, TopKSAE)
    assert torch.equal(sae.W_dec, loaded.W_dec) and torch.equal(sae.W_enc, loaded.W_enc)


@pytest.mark.parametrize("input_norm", ["standardize", "whiten"])
def test_input_norm_folds_back_into_activation_space(input_norm):
    torch.manual_seed(2)
    x = torch.randn(256, 8) * torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 0.01]) + 5
    sae = TopKSAE(TopKSAEConfig(d=8, n=16, k=3, input_norm=input_norm))
    sae.initialize(x)
    code = sae.encode(x)
    inside = sae.norm.invert(code.dense(16) @ sae.W_dec + sae.b_dec)  # decode in normalised space
    torch.testing.assert_close(sae.decode(code), inside, rtol=1e-4, atol=1e-3)
    assert sae.atoms.shape == (16, 8)
    assert float(sae.atoms[:, 0].abs().mean()) > 100 * float(sae.atoms[:, 7].abs().mean())


def test_geometric_median_resists_outliers():
    points = torch.cat([torch.zeros(99, 3), torch.full((1, 3), 1000.0)])
    assert float(geometric_median(points).norm()) < 1.0 < float(points.mean(0).norm())


def test_lr_scales_with_n():
    assert TopKSAEConfig(d=4, n=2**14, k=1).effective_lr == pytest.approx(1e-4)
    assert TopKSAEConfig(d=4, n=2**12, k=1).effective_lr == pytest.approx(2e-4)


def write_unbox_checkpoint(folder, n=24, d=10, k=3, seed=0, threshold=2441, stats=None):
    """A checkpoint in sdxl-unbox's layout: config.json + torch.save({"state_dict": ...}) (SAE.save_to_disk)."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "encoder.weight": torch.randn(n, d, generator=g),
        "decoder.weight": torch.randn(d, n, generator=g),
        "pre_bias": torch.randn(d, generator=g),
        "latent_bias": torch.randn(n, generator=g) * 0.1,
        "stats_last_nonzero": torch.zeros(n, dtype=torch.long) if stats is None else stats,
    }
    state["decoder.weight"] /= state["decoder.weight"].norm(dim=0)
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"n_dirs_local": n, "d_model": d, "k": k, "auxk": 256, "dead_steps_threshold": threshold})
    )
    torch.save({"state_dict": state}, folder / "state_dict.pth")
    return state


def test_sdxl_unbox_import_encodes_identically(tmp_path):
    state = write_unbox_checkpoint(tmp_path / "unbox")
    sae = import_unbox(tmp_path / "unbox")
    x = torch.randn(100, 10)
    # sdxl-unbox: latents = relu(topk(encoder(x - pre_bias) + latent_bias)); recons = decoder(latents) + pre_bias
    pre = (x - state["pre_bias"]) @ state["encoder.weight"].t() + state["latent_bias"]
    vals, inds = pre.topk(3, dim=1)
    latents = torch.zeros_like(pre).scatter(1, inds, vals.relu())
    code = sae.encode(x)
    torch.testing.assert_close(code.dense(24), latents)
    torch.testing.assert_close(sae.decode(code), latents @ state["decoder.weight"].t() + state["pre_bias"])
    assert sae.config.dead_tokens == 2441 * 4096 and sae.config.k_aux == 256
    sae.save(tmp_path / "ours")
    assert torch.equal(base.load(tmp_path / "ours").encode(x).indices, code.indices)


def test_sdxl_unbox_import_trains_with_the_reference_loss_scale_and_dead_rule(tmp_path):
    n, batch, T = 24, 32, 3
    stats = torch.tensor([0, 1, 2, 3, 4, 5] * 4)  # steps since firing as sdxl-unbox counts them
    state = write_unbox_checkpoint(tmp_path / "unbox", n=n, threshold=T, stats=stats)
    state["latent_bias"][12:] -= 50.0  # half the latents never fire again
    torch.save({"state_dict": state}, tmp_path / "unbox" / "state_dict.pth")
    x = torch.randn(10 * batch, 10) * 2 + 1
    sample = x[: 4 * batch]
    sae = import_unbox(tmp_path / "unbox", batch_size=batch, sample=sample)
    # sdxl-unbox: mse_scale = 1 / ((sample.mean(0) - sample) ** 2).mean(), taken before training
    assert sae.mse_scale == pytest.approx(1 / float(((sample.mean(0) - sample) ** 2).mean()), rel=1e-6)
    lazy = import_unbox(tmp_path / "unbox", batch_size=batch)
    lazy.partial_fit(x[:batch])
    assert lazy.mse_scale == pytest.approx(1 / float(((x[:batch].mean(0) - x[:batch]) ** 2).mean()), rel=1e-6)
    reference = stats.clone()
    for step in range(6):
        chunk = x[step * batch : (step + 1) * batch]
        with torch.no_grad():  # which latents fire this step, from the weights before the step
            top = ((chunk - sae.b_dec) @ sae.W_enc.t() + sae.b_enc).topk(3, dim=1)
            fired = (
                torch.zeros(n, dtype=torch.long)
                .scatter_add_(0, top.indices.reshape(-1), (top.values > 1e-3).long().reshape(-1))
                .clamp(max=1)
            )
        reference = reference * (1 - fired) + 1  # SparseAutoencoder.forward
        stats_step = sae.partial_fit(chunk)
        ours = sae.tokens_since_fired >= sae.config.dead_tokens
        assert torch.equal(ours, reference > T), step  # their auxk_mask_fn: stats_last_nonzero > threshold
        assert stats_step["dead_fraction"] == pytest.approx(float((reference > T).float().mean()))


def test_sdxl_unbox_import_rejects_a_wrong_file(tmp_path):
    folder = tmp_path / "bad"
    write_unbox_checkpoint(folder)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2, 2)}}, folder / "state_dict.pth")
    with pytest.raises(ValueError, match="expected tensors"):
        import_unbox(folder)
    with pytest.raises(FileNotFoundError, match="not an sdxl-unbox checkpoint"):
        import_unbox(tmp_path)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k=9 is larger than n=8"):
        base.create("topk_sae", d=4, n=8, k=9)
    with pytest.raises(ValueError, match="unknown dictionary architecture 'topk-sae'.*did you mean 'topk_sae'"):
        base.create("topk-sae", d=4, n=8, k=2)
    sae = base.create("topk_sae", d=4, n=8, k=2)
    with pytest.raises(ValueError, match="d=5 but this dictionary was built for d=4"):
        sae.encode(torch.randn(3, 5))
    x = torch.randn(6, 4)
    x[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite.*1 of 6 rows, first rows \[4\]"):
        sae.partial_fit(x)
