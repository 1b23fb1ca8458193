"""A new architecture is one class registered in one place: the trainer, the loader and the study
config learn of it from the registry and the class's own protocol attributes, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest
import torch

from dict_fixtures import PROMPTS, FakeAdapter, one_thread  # noqa: F401 (fixture)
from diffdict import dictionaries
from diffdict.dictionaries import registry
from diffdict.dictionaries.base import Dictionary, SparseCode, batch_rows, check_activations, sparse_decode
from diffdict.dictionaries.harvest import harvest
from diffdict.dictionaries.train import DictionarySpec, TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class DenseConfig:
    d: int
    atoms: int
    active: int
    lr: float = 0.05


class DenseLinear(Dictionary):
    """A made-up learner: a linear autoencoder whose code keeps the `active` largest entries,
    trained by plain gradient steps; its atoms start as unit-normed rows of a sample."""

    architecture = "dense_linear"
    config_class = DenseConfig
    size_keys = ("atoms", "active")
    init_from_sample = True

    def __init__(self, config: DenseConfig) -> None:
        super().__init__(config)
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(config.atoms, config.d, generator=generator) / config.d**0.5
        self.initialized = False
        self.batches_seen: list[type] = []  # what partial_fit was handed (not saved)

    @property
    def n(self) -> int:
        return self.config.atoms

    @property
    def atoms(self) -> torch.Tensor:
        return self.weight

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def to(self, device):
        self.weight = self.weight.to(device)
        return self

    def initialize(self, sample: torch.Tensor) -> None:
        rows = sample[: self.n].float()
        self.weight = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-6)
        self.initialized = True

    def encode(self, x: torch.Tensor) -> SparseCode:
        scores = check_activations(x, self.d, "dense.encode", self.device).float() @ self.weight.t()
        values, indices = scores.topk(self.config.active, dim=1)
        return SparseCode(values, indices)

    def decode(self, code: SparseCode) -> torch.Tensor:
        return sparse_decode(code, self.weight)

    def partial_fit(self, batch) -> dict[str, float]:
        self.batches_seen.append(type(batch))
        x = batch_rows(batch).float()
        weight = self.weight.clone().requires_grad_(True)
        scores = x @ weight.t()
        values, indices = scores.topk(self.config.active, dim=1)
        recon = torch.zeros_like(scores).scatter(1, indices, values) @ weight
        loss = (recon - x).pow(2).sum(1).mean() / x.pow(2).sum(1).mean()
        loss.backward()
        self.weight = (weight - self.config.lr * weight.grad).detach()
        return {"fvu": float(loss.detach()), "loss": float(loss.detach())}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight = tensors["weight"].float()

    # `initialized` needs no code here: the base class saves and restores it (Dictionary.resume_state)


@pytest.fixture
def dense_registered(monkeypatch):
    """DenseLinear registered for one test (and gone afterwards)."""
    monkeypatch.setitem(registry.REGISTRY, DenseLinear.architecture, DenseLinear)
    return DenseLinear


def test_a_registered_architecture_trains_saves_and_loads_through_the_trainer(tmp_path, dense_registered):
    store = harvest(FakeAdapter(), PROMPTS, [0, 1], ["down.2.1"], tmp_path / "store", dtype="fp32", progress=False)
    specs = [
        DictionarySpec("dense", "dense_linear", "down.2.1", {"atoms": 12, "active": 3}),
        DictionarySpec("itda", "itda", "down.2.1", {"L": 3, "threshold": 0.5}),
    ]  # a stream with provenance
    settings = TrainSettings(
        tokens=64 * 6,
        batch_size=64,
        checkpoint_every=2,
        buffer_tokens=200,
        init_tokens=128,
        eval_tokens=128,
        eval_fraction=0.2,
    )
    trained = train(store, specs, settings, tmp_path / "fits", progress=False)
    dense = trained["dense"]
    assert isinstance(dense, DenseLinear) and dense.initialized  # the trainer ran initialize(sample)
    assert dense.batches_seen == [torch.Tensor] * 6  # plain rows, though ITDA's stream carries provenance
    assert dense.meta["train_steps"] == 6 and dense.meta["hook"] == "down.2.1"
    metrics = pl.read_parquet(tmp_path / "fits" / "metrics.parquet")
    assert metrics.filter((pl.col("name") == "dense") & (pl.col("kind") == "train")).height == 6
    assert metrics.filter((pl.col("name") == "dense") & (pl.col("kind") == "eval"))["fvu"].is_finite().all()
    loaded = dictionaries.load(tmp_path / "fits" / "dense")
    assert type(loaded) is DenseLinear and torch.equal(loaded.weight, dense.weight)
    x = torch.randn(5, dense.d)
    assert torch.equal(loaded.reconstruct(x), dense.reconstruct(x))


def test_the_registry_is_the_one_list_of_architectures(dense_registered):
    from diffdict.studies.run import SIZE_KEYS
    from diffdict.studies.validate import memory_estimate

    assert registry.architecture_names()[:2] == ("topk_sae", "itda")  # the built-ins first, in BUILTIN's order
    assert "dense_linear" in registry.architecture_names()
    assert set(SIZE_KEYS) == set(registry.architecture_names())  # built-ins and whatever else is registered
    assert {name: SIZE_KEYS[name] for name in ("topk_sae", "itda", "dense_linear")} == {
        "topk_sae": ("n", "k"),
        "itda": ("max_size", "L"),
        "dense_linear": ("atoms", "active"),
    }
    need, how = memory_estimate("dense_linear", 100, 10, 8)  # the base class's default estimate
    assert need == 2 * 100 * 10 * 4 + 8 * 100 * 4 and how
    with pytest.raises(ValueError, match="unknown dictionary architecture 'dense_linea'.*did you mean 'dense_linear'"):
        registry.architecture_class("dense_linea")


STUDY = """
name = "registry"
out = "{out}"

[prompts]
source = "list"
list = ["a red square", "a blue circle"]
count = 2
eval_fraction = 0.5

[[models]]
name = "tiny"
id = "tiny/sdxl"

[harvest]
hooks = ["mid.0"]

[[dictionaries]]
name = "dense"
architecture = "dense_linear"
model = "tiny"
hook = "mid.0"
n = 16
k = 2
tokens = 128
batch = 64
options = {{ {options} }}
"""


def test_a_study_config_accepts_a_registered_architecture_and_checks_its_options(tmp_path, dense_registered):
    import tomllib

    from diffdict.studies.config import ConfigError, parse_config

    def parse(options: str):
        return parse_config(tomllib.loads(STUDY.format(out=tmp_path / "run", options=options)))

    assert parse("lr = 0.1").dictionaries[0].architecture == "dense_linear"
    with pytest.raises(ConfigError, match="options.atoms.*set `n` on the entry"):
        parse("atoms = 3")
    with pytest.raises(ConfigError, match="unknown option for dense_linear"):
        parse("k_aux = 3")
