"""ITDA and the Gram-matrix pursuits: exact against the textbook loops, low FVU, provenance, persistence."""

from __future__ import annotations

import pytest
import torch

from dict_fixtures import one_thread, planted_atoms, planted_data  # noqa: F401 (fixture)
from diffdict.dictionaries import base
from diffdict.dictionaries.itda import ITDA, ITDAConfig
from diffdict.dictionaries.metrics import evaluate, fvu
from diffdict.dictionaries.pursuit import pursuit
from diffdict.dictionaries.store_reader import TokenBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def textbook_matching_pursuit(x, D, L):
    """Leask-style MP: dense coefficients, a full residual product every iteration."""
    residual, coef = x.clone(), torch.zeros(x.shape[0], D.shape[0])
    for _ in range(L):
        corr = residual @ D.t()
        pick = corr.abs().argmax(1)
        amount = corr.gather(1, pick[:, None])
        coef.scatter_add_(1, pick[:, None], amount)
        residual -= amount * D[pick]
    return coef


def textbook_gradient_pursuit(x, D, L):
    """Blumensath & Davies gradient pursuit in signal space (the Flux paper's loop)."""
    residual, coef = x.clone(), torch.zeros(x.shape[0], D.shape[0])
    support = torch.zeros_like(coef, dtype=torch.bool)
    for _ in range(L):
        corr = residual @ D.t()
        pick = corr.masked_fill(support, 0).abs().argmax(1)  # the support grows by one atom
        support[torch.arange(x.shape[0]), pick] = True
        direction = corr * support
        change = direction @ D
        step = (direction * direction).sum(1) / (change * change).sum(1)
        coef += step[:, None] * direction
        residual -= step[:, None] * change
    return coef


@pytest.fixture
def problem():
    D = planted_atoms(96, 24, seed=3)
    x = planted_data(D, 200, active=5, seed=4, noise=0.02)
    return x, D, D @ D.t()


def dense(values, indices, m):
    return torch.zeros(values.shape[0], m).scatter_add_(1, indices, values)


def test_gram_matching_pursuit_equals_the_textbook_loop(problem):
    x, D, G = problem
    values, indices = pursuit(x, D, G, L=6, method="matching", refit=False)
    torch.testing.assert_close(dense(values, indices, 96), textbook_matching_pursuit(x, D, 6), rtol=1e-4, atol=1e-5)


def test_gram_gradient_pursuit_equals_the_textbook_loop(problem):
    x, D, G = problem
    values, indices = pursuit(x, D, G, L=6, method="gradient", refit=False)
    torch.testing.assert_close(dense(values, indices, 96), textbook_gradient_pursuit(x, D, 6), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["matching", "gradient"])
def test_refit_is_never_worse_and_supports_are_distinct(problem, method):
    x, D, G = problem
    plain = dense(*pursuit(x, D, G, L=6, method=method, refit=False), 96) @ D
    values, indices = pursuit(x, D, G, L=6, method=method, refit=True)
    refit = dense(values, indices, 96) @ D
    if method == "gradient":  # same support with and without the refit: the refit wins row by row
        assert ((x - refit).pow(2).sum(1) <= (x - plain).pow(2).sum(1) + 1e-5).all()
    assert fvu(x, refit) <= fvu(x, plain)
    assert fvu(x, refit) < fvu(x, textbook_matching_pursuit(x, D, 6) @ D)
    assert all(len(set(row.tolist())) == 6 for row in indices)


def test_itda_reaches_low_fvu_on_planted_data():
    atoms = planted_atoms(48, 32, seed=0)
    itda = ITDA(ITDAConfig(d=32, L=8, threshold=0.1))
    for batch in planted_data(atoms, 512 * 20, active=3, seed=1).split(512):
        itda.partial_fit(batch)
    result = evaluate(itda, [planted_data(atoms, 2048, 3, seed=5)])
    assert result["fvu"] < 0.05, result
    assert itda.n < 2000  # the dictionary stops growing once the data is explained
    assert torch.allclose(itda.atoms.norm(dim=1), torch.ones(itda.n), atol=1e-5)


def test_itda_keeps_provenance_and_respects_max_size():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    provenance = {
        "map_row": torch.arange(64) // 16,
        "prompt_id": torch.arange(64) // 32,
        "seed": torch.full((64,), 7),
        "step": torch.zeros(64, dtype=torch.long),
        "position": torch.arange(64) % 16,
    }
    itda = ITDA(ITDAConfig(d=8, L=2, threshold=0.5, max_size=10))
    itda.partial_fit(TokenBatch(x, provenance))
    assert itda.n == 10
    positions = itda.provenance["position"].tolist()
    assert positions[0] == 0 and positions == sorted(positions) and positions != list(range(10))
    assert set(itda.provenance["seed"].tolist()) == {7}
    for atom, position in zip(itda.atoms, positions):  # an atom is a real activation, labelled with its token
        torch.testing.assert_close(atom, x[position] / x[position].norm())
    assert itda.partial_fit(TokenBatch(x, provenance))["added"] == 0  # full


def sequential_itda(batches, threshold, L, method="matching", refit=True):
    """The admission rule token by token: a token that the batch's starting atoms fail to code
    (normalised error > threshold) is appended unless the atoms as they stand when its turn comes
    code it within the threshold. Returns the atoms (n, d) and, per batch, the admitted rows."""

    def error(x, atoms):
        if atoms.shape[0] == 0:
            return 1.0
        values, indices = pursuit(x[None], atoms, atoms @ atoms.t(), L, method, refit)
        recon = dense(values, indices, atoms.shape[0]) @ atoms
        return float((x - recon).pow(2).sum() / x.pow(2).sum())

    atoms, admitted = torch.zeros(0, batches[0].shape[1]), []
    for batch in batches:
        start, rows = atoms, []
        for i, x in enumerate(batch):
            if error(x, start) > threshold and error(x, atoms) > threshold:
                atoms = torch.cat([atoms, (x / x.norm())[None]])
                rows.append(i)
        admitted.append(rows)
    return atoms, admitted


@pytest.mark.parametrize("method,refit", [("matching", True), ("matching", False), ("gradient", False)])
def test_batched_admission_equals_the_sequential_rule(method, refit):
    directions = planted_atoms(40, 16, seed=7)
    x = planted_data(directions, 6 * 96, active=2, seed=8, noise=0.05)
    x[5] = x[2] * 3.0  # a duplicate inside the first batch
    batches = list(x.split(96))
    expected_atoms, expected_rows = sequential_itda(batches, 0.25, 3, method, refit)
    itda = ITDA(ITDAConfig(d=16, L=3, threshold=0.25, pursuit=method, refit=refit))

    def provenance(b: int) -> dict:
        return {"position": torch.arange(96) + 96 * b}

    added = [itda.partial_fit(TokenBatch(batch, provenance(b)))["added"] for b, batch in enumerate(batches)]
    assert added == [len(rows) for rows in expected_rows]
    assert itda.provenance["position"].tolist() == [96 * b + i for b, rows in enumerate(expected_rows) for i in rows]
    torch.testing.assert_close(itda.atoms, expected_atoms)
    assert 5 not in expected_rows[0] and len(expected_rows[0]) < 96  # the first batch is selected, not copied
    assert itda.meta["added_per_batch"] == added and itda.meta["threshold"] == 0.25 and itda.meta["size"] == itda.n


def one_direction_tokens(planted: int, d: int, tokens: int, noise: float, seed: int) -> torch.Tensor:
    """Each token one of `planted` unit directions, scaled, plus isotropic noise (noise^2 of its energy)."""
    directions = planted_atoms(planted, d, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    scale = 0.5 + torch.rand(tokens, 1, generator=g)
    picks = torch.randint(0, planted, (tokens,), generator=g)
    return (directions[picks] + noise * torch.randn(tokens, d, generator=g) / d**0.5) * scale


def test_size_follows_the_data_not_the_batch_size():
    x = one_direction_tokens(150, 48, 4096, noise=0.3, seed=0)
    sizes = {}
    for batch_size in (64, 512, 2048):
        itda = ITDA(ITDAConfig(d=48, L=4, threshold=0.3))
        for batch in x.split(batch_size):
            itda.partial_fit(batch)
        sizes[batch_size] = itda.n
        assert itda.partial_fit(x[:batch_size])["added"] == 0  # a batch seen before adds nothing
    assert all(140 <= size <= 160 for size in sizes.values()), sizes


def test_size_follows_the_threshold_and_a_cap_keeps_the_selected_tokens():
    atoms = planted_atoms(64, 32, seed=0)
    x = planted_data(atoms, 4 * 512, active=3, seed=1, noise=0.05)
    sizes, first = {}, {}
    for threshold in (0.1, 0.2, 0.4):
        itda = ITDA(ITDAConfig(d=32, L=8, threshold=threshold))
        first[threshold] = itda.partial_fit(x[:512])["added"]
        for batch in x[512:].split(512):
            itda.partial_fit(batch)
        sizes[threshold] = itda.n
    assert sizes[0.1] > sizes[0.2] > sizes[0.4], sizes
    assert first[0.4] < first[0.2] < first[0.1] < 512, first
    # a cap below the uncapped size: the first atoms are those the uncapped fit selects, not the first tokens
    repeats = one_direction_tokens(30, 32, 512, noise=0.2, seed=2)
    uncapped = ITDA(ITDAConfig(d=32, L=8, threshold=0.2))
    uncapped.partial_fit(TokenBatch(repeats, {"position": torch.arange(512)}))
    capped = ITDA(ITDAConfig(d=32, L=8, threshold=0.2, max_size=20))
    capped.partial_fit(TokenBatch(repeats, {"position": torch.arange(512)}))
    assert capped.n == 20
    assert capped.provenance["position"].tolist() == uncapped.provenance["position"][:20].tolist()
    assert capped.provenance["position"].tolist() != list(range(20))


def test_size_follows_the_threshold_on_model_activations(tiny_sdxl):
    gen = tiny_sdxl.generate(
        ["a red square", "a blue circle", "a green triangle", "a white square"],
        seeds=[0, 1, 2, 3],
        hooks=["down.2.1"],
        steps=2,
        guidance=0.0,
    )
    maps = gen.stacked("down.2.1", "cond")
    x = maps.reshape(-1, maps.shape[-1]).float()
    sizes = []
    for threshold in (0.05, 0.2, 0.5):
        itda = ITDA(ITDAConfig(d=x.shape[1], L=4, threshold=threshold))
        added = [itda.partial_fit(batch)["added"] for batch in x.split(64)]
        assert added[0] < 64 or threshold == 0.05
        sizes.append(itda.n)
    assert sizes[0] > sizes[1] > sizes[2] and sizes[2] < x.shape[0] // 4, (sizes, x.shape)


@pytest.mark.parametrize("input_norm", ["none", "standardize"])
def test_itda_save_load_round_trip_is_exact(tmp_path, input_norm):
    torch.manual_seed(1)
    x = torch.randn(300, 12) * 3 + 1
    itda = base.create("itda", d=12, L=3, threshold=0.4, input_norm=input_norm)
    itda.fit(x.split(100))
    itda.save(tmp_path / "itda")
    loaded = base.load(tmp_path / "itda")
    assert isinstance(loaded, ITDA)
    for name, tensor in itda.tensors().items():
        assert torch.equal(tensor, loaded.tensors()[name]), name
    a, b = itda.encode(x), loaded.encode(x)
    assert torch.equal(a.indices, b.indices) and torch.allclose(a.values, b.values, atol=1e-6)


def test_itda_bad_input():
    with pytest.raises(ValueError, match="L=40 is larger than max_size=8"):
        base.create("itda", d=4, L=40, max_size=8)
    with pytest.raises(ValueError, match="pursuit must be one of"):
        base.create("itda", d=4, pursuit="orthogonal")
    with pytest.raises(ValueError, match="d=3 but this dictionary was built for d=4"):
        base.create("itda", d=4).partial_fit(torch.randn(5, 3))


def test_l0_counts_distinct_active_atoms():
    from diffdict.dictionaries.metrics import MetricsAccumulator

    acc = MetricsAccumulator(d=2, n=6)
    values = torch.tensor([[1.0, 0.5, 0.2], [1.0, -1.0, 0.3], [0.0, 0.4, 0.1]])
    indices = torch.tensor([[3, 3, 5], [2, 2, 0], [1, 4, 4]])  # a re-pick; a re-pick that cancels; a zero entry
    acc.add(torch.randn(3, 2), torch.zeros(3, 2), values, indices)
    result = acc.result()
    assert result["l0"] == pytest.approx(4 / 3)  # {3, 5}, {0}, {4}
    assert result["frequencies"].tolist() == pytest.approx([1 / 3, 0, 0, 1 / 3, 1 / 3, 1 / 3])
    # plain matching pursuit re-picks atoms: L0 is below L, and equals the distinct atoms per token
    atoms = planted_atoms(48, 16, seed=0)
    itda = ITDA(ITDAConfig(d=16, L=8, threshold=0.05, refit=False))
    itda.fit(planted_data(atoms, 1024, active=4, seed=1, noise=0.1).split(256))
    x = planted_data(atoms, 256, active=4, seed=2, noise=0.1)
    code = itda.encode(x)
    distinct = [
        len({int(i) for i, v in zip(row_i, row_v) if v != 0}) for row_i, row_v in zip(code.indices, code.values)
    ]
    assert evaluate(itda, [x])["l0"] == pytest.approx(sum(distinct) / len(distinct))
    assert sum(distinct) < 8 * len(distinct)


@pytest.mark.parametrize("method,refit", [("matching", True), ("matching", False), ("gradient", True)])
def test_pursuit_with_an_allowed_mask_equals_pursuit_on_those_atoms(problem, method, refit):
    x, D, G = problem
    x = x[:24]
    allowed = torch.rand(24, 96, generator=torch.Generator().manual_seed(0)) < 0.4
    allowed[:3, 10:] = False  # rows with fewer allowed atoms than L
    values, indices = pursuit(x, D, G, L=6, method=method, refit=refit, allowed=allowed)
    for row in range(24):
        keep = allowed[row].nonzero().flatten()
        v, i = pursuit(x[row : row + 1], D[keep], G[keep][:, keep], L=6, method=method, refit=refit)
        alone = dense(v, keep[i], 96)
        masked = dense(values[row : row + 1], indices[row : row + 1], 96)
        assert not masked[0, ~allowed[row]].any()
        torch.testing.assert_close(masked @ D, alone @ D, rtol=1e-4, atol=1e-5)
