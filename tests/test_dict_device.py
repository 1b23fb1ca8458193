"""Dictionaries follow their device: `.to()` moves every tensor, load(device=...), and no tensor
is made off the inputs' device (checked without a GPU: see test_no_tensor_is_made_off_the_inputs_device)."""

from __future__ import annotations

import pytest
import torch

from dict_fixtures import PROMPTS, FakeAdapter, one_thread, planted_atoms, planted_data  # noqa: F401 (fixture)
from diffdict.dictionaries import base
from diffdict.dictionaries.harvest import harvest
from diffdict.dictionaries.itda import ITDA, ITDAConfig
from diffdict.dictionaries.metrics import evaluate
from diffdict.dictionaries.store_reader import TokenBatch
from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig
from diffdict.dictionaries.train import DictionarySpec, TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")

D = 12


def data(tokens: int = 96, seed: int = 1) -> torch.Tensor:
    return planted_data(planted_atoms(32, D), tokens, active=3, seed=seed, noise=0.01)


def batch_with_provenance(x: torch.Tensor) -> TokenBatch:
    ids = torch.arange(x.shape[0], device=x.device)
    return TokenBatch(
        x, {"map_row": ids // 16, "prompt_id": ids // 32, "seed": ids % 2, "step": ids % 3, "position": ids % 16}
    )


def make(architecture: str, **overrides):
    """A small dictionary of each kind, with an input norm so the normaliser's tensors are exercised."""
    if architecture == "topk_sae":
        # dead_tokens below one batch: every latent that misses a batch is dead, so AuxK runs
        config = dict(d=D, n=40, k=3, k_aux=8, dead_tokens=64, input_norm="whiten", init_sample=96)
        return TopKSAE(TopKSAEConfig(**{**config, **overrides}))
    config = dict(d=D, L=4, threshold=0.2, input_norm="standardize")
    return ITDA(ITDAConfig(**{**config, **overrides}))


def fitted(architecture: str, steps: int = 2, **overrides):
    dictionary = make(architecture, **overrides)
    for step in range(steps):
        dictionary.partial_fit(batch_with_provenance(data(seed=step + 1)))
    return dictionary


def held_tensors(value, seen=None):
    """Every tensor reachable from a dictionary's attributes (optimiser state and normaliser included)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from held_tensors(key, seen)
            yield from held_tensors(item, seen)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from held_tensors(item, seen)
    elif isinstance(value, torch.optim.Optimizer):
        yield from held_tensors(value.state, seen)
        yield from held_tensors(value.param_groups, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from held_tensors(vars(value), seen)


ARCHITECTURES = ["topk_sae", "itda"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_to_moves_every_tensor(architecture):
    dictionary = fitted(architecture)
    assert dictionary.device == torch.device("cpu")
    assert dictionary.to("meta") is dictionary
    assert dictionary.device == torch.device("meta")
    devices = {tensor.device.type for tensor in held_tensors(dictionary)}
    assert devices == {"meta"}
    assert {t.device.type for t in {**dictionary.tensors(), **dictionary.training_tensors()}.values()} == {"meta"}
    if architecture == "topk_sae":  # the Adam state travels (as the restore a resume uses)
        assert any(name.startswith("adam.") for name in dictionary.training_tensors())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_to_round_trip_keeps_training_bit_identical(architecture):
    moved, still = fitted(architecture), fitted(architecture)
    moved.to("cpu").to(torch.device("cpu"))
    for dictionary in (moved, still):
        dictionary.partial_fit(batch_with_provenance(data(seed=9)))
    for name, tensor in still.tensors().items():
        assert torch.equal(tensor, moved.tensors()[name]), name
    for name, tensor in still.training_tensors().items():
        assert torch.equal(tensor, moved.training_tensors()[name]), name


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_load_places_tensors_on_the_device(architecture, tmp_path):
    dictionary = fitted(architecture)
    dictionary.save(tmp_path / "d", training_state=True)
    on_meta = base.load(tmp_path / "d", training_state=True, device="meta")
    assert on_meta.device == torch.device("meta")
    assert {tensor.device.type for tensor in held_tensors(on_meta)} == {"meta"}
    on_cpu = base.load(tmp_path / "d", training_state=True, device="cpu")
    for name, tensor in dictionary.tensors().items():
        assert torch.equal(tensor, on_cpu.tensors()[name]), name


def test_inputs_on_another_device_are_refused_with_the_fix():
    dictionary = fitted("topk_sae").to("meta")
    with pytest.raises(ValueError, match=r"on cpu but the dictionary is on meta.*x\.to\(dictionary\.device\)"):
        dictionary.encode(data())


@pytest.mark.parametrize(
    "architecture,options",
    [
        ("topk_sae", {"n": 120}),  # a few dead latents: AuxK's dense path
        ("topk_sae", {"n": 400, "k_aux": 4}),  # many dead latents: AuxK's sparse path
        ("itda", {"pursuit": "matching"}),
        ("itda", {"pursuit": "gradient", "refit": False}),
    ],
)
def test_no_tensor_is_made_off_the_inputs_device(architecture, options):
    """With torch's default device set to `meta`, a tensor made without `device=` lands on meta
    while the dictionary and its inputs are on the CPU: mixing them raises (or a meta result
    cannot be read back). So this fails exactly where a GPU run would make a CPU tensor."""
    dictionary = make(architecture, **options)  # built on the CPU, as designed, before the switch
    x, later = data(), data(seed=5)
    torch.set_default_device("meta")
    try:
        stats = [dictionary.partial_fit(batch_with_provenance(x)) for _ in range(2)]
        stats.append(dictionary.partial_fit(batch_with_provenance(later)))
        code = dictionary.encode(later)
        reconstruction = dictionary.decode(code)
        dense = code.dense(dictionary.n)
        empty = dictionary.encode(later[:0])
        metrics = evaluate(dictionary, [later, batch_with_provenance(x)])
    finally:
        torch.set_default_device(None)
    assert reconstruction.device.type == dense.device.type == empty.values.device.type == "cpu"
    assert metrics["frequencies"].device.type == "cpu" and metrics["fvu"] >= 0
    assert all(value == value for step in stats for value in step.values())  # finite, read back
    if architecture == "topk_sae":
        assert any(step["aux_loss"] > 0 for step in stats), "AuxK must run for the check to cover it"
    else:
        assert dictionary.provenance is not None
        assert dictionary.provenance["prompt_id"].device.type == "cpu" and dictionary.n > 0


def test_train_on_a_named_device_equals_the_default(tmp_path):
    store = harvest(FakeAdapter(), PROMPTS[:4], [0], ["mid.0"], tmp_path / "store", dtype="fp32", progress=False)
    specs = [
        DictionarySpec("sae", "topk_sae", "mid.0", {"n": 16, "k": 2, "dead_tokens": 64}),
        DictionarySpec("itda", "itda", "mid.0", {"L": 2, "threshold": 0.5}),
    ]
    settings = TrainSettings(
        tokens=32 * 4,
        batch_size=32,
        checkpoint_every=2,
        buffer_tokens=64,
        init_tokens=64,
        eval_tokens=32,
        eval_fraction=0.25,
    )
    default = train(store, specs, settings, tmp_path / "a", progress=False)
    named = train(store, specs, settings, tmp_path / "b", progress=False, device="cpu")
    for name, dictionary in default.items():
        assert named[name].device == torch.device("cpu")
        for key, tensor in dictionary.tensors().items():
            assert torch.equal(tensor, named[name].tensors()[key]), (name, key)
