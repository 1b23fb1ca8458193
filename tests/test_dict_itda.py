"""ITDA and the Gram-matrix pursuits: exact against the textbook loops, low FVU, provenance, persistence."""
from __future__ import annotations

import pytest
import torch

from dict_fixtures import one_thread, planted_atoms, planted_data  # noqa: F401 (fixture)
from dictionaries import base
from dictionaries.itda import ITDA, ITDAConfig
from dictionaries.metrics import evaluate, fvu
from dictionaries.pursuit import pursuit
from dictionaries.store_reader import TokenBatch

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
    provenance = {"map_row": torch.arange(64) // 16, "prompt_id": torch.arange(64) // 32,
                  "seed": torch.full((64,), 7), "step": torch.zeros(64, dtype=torch.long),
                  "position": torch.arange(64) % 16}
    itda = ITDA(ITDAConfig(d=8, L=2, threshold=0.5, max_size=10))
    itda.partial_fit(TokenBatch(x, provenance))
    assert itda.n == 10
    assert itda.provenance["position"].tolist() == list(range(10))
    assert set(itda.provenance["seed"].tolist()) == {7}
    torch.testing.assert_close(itda.atoms[3], x[3] / x[3].norm())  # an atom is a real activation


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
