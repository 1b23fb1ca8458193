"""Property-based tests (hypothesis), bounded in time: the config loader and the store reader.

Config loader: any TOML-like table either becomes a valid StudyConfig or raises ConfigError
(a message naming the key), never another exception. Store reader: for any batch size,
buffer, seed and selection, one epoch yields every selected token exactly once, and resuming
at any batch continues the same sequence.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dict_fixtures import PROMPTS, FakeAdapter
from diffdict.dictionaries.harvest import harvest
from diffdict.studies.config import ConfigError, parse_config

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(-2, 2, allow_nan=False),
    st.text(string.ascii_lowercase + "._/", max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "n", "k", "id"]), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = [
    "name",
    "out",
    "seed",
    "device",
    "clip_model",
    "prompts",
    "models",
    "harvest",
    "train",
    "dictionaries",
    "studies",
    "modles",
    "extra",
]


def _valid_table() -> dict:
    return {
        "name": "p",
        "prompts": {"source": "list", "list": ["a cat", "a dog"], "count": 2},
        "models": [{"name": "m", "id": "tiny/sdxl"}],
        "harvest": {"hooks": ["down.2.1"]},
        "dictionaries": [
            {
                "name": "d",
                "architecture": "topk_sae",
                "model": "m",
                "hook": "down.2.1",
                "n": 8,
                "k": 2,
                "tokens": 512,
                "batch": 256,
            }
        ],
    }


def _drop_none(value: Any) -> Any:
    """TOML has no null: the loader never sees None."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


@BOUNDED
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_config_loader_accepts_or_names_the_problem(table):
    try:
        config = parse_config(_drop_none(table), source="fuzz.toml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml: ")
    else:
        assert config.models  # a config that loads has at least one model


@BOUNDED
@given(st.sampled_from(["name", "n", "k", "tokens", "batch", "hook", "model", "architecture"]), values)
def test_one_bad_dictionary_value_is_named(key, value):
    table = _valid_table()
    table["dictionaries"][0][key] = _drop_none(value)
    try:
        config = parse_config(_drop_none(table), source="fuzz.toml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml: ")
    else:  # accepted: the value must have been one the schema allows
        entry = config.dictionaries[0]
        assert entry.n >= entry.k >= 1 and entry.tokens >= entry.batch


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.set_num_threads(1)
    return harvest(
        FakeAdapter(),
        PROMPTS,
        [0],
        ["down.2.1"],
        tmp_path_factory.mktemp("prop"),
        dtype="fp32",
        batch_size=4,
        progress=False,
    )


def _rows_sorted(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x[:, 0] * 1e6 + x[:, 1])]


@BOUNDED
@given(
    batch=st.integers(1, 70),
    buffer=st.integers(1, 400),
    seed=st.integers(0, 2**16),
    split=st.sampled_from(["all", "train", "eval"]),
    branch=st.sampled_from([None, "cond"]),
)
def test_stream_yields_each_selected_token_once_per_epoch(store, batch, buffer, seed, split, branch):
    selection = dict(split=split, eval_fraction=0.25, branch=branch)
    expected = store.tokens(store.select("down.2.1", **selection))
    batches = list(store.stream("down.2.1", batch_size=batch, buffer_tokens=buffer, seed=seed, **selection))
    streamed = torch.cat(batches) if batches else torch.zeros(0, expected.shape[1])
    full = expected.shape[0] // batch * batch  # a trailing partial batch may be dropped
    assert all(b.shape[0] == batch for b in batches)
    assert full <= streamed.shape[0] <= expected.shape[0]
    if streamed.shape[0] == expected.shape[0]:
        assert torch.equal(_rows_sorted(streamed), _rows_sorted(expected))


@BOUNDED
@given(batch=st.integers(4, 48), buffer=st.integers(8, 200), seed=st.integers(0, 999), start=st.integers(0, 12))
def test_stream_resumes_at_any_batch(store, batch, buffer, seed, start):
    reference = store.stream("down.2.1", batch_size=batch, buffer_tokens=buffer, seed=seed, epochs=None)
    head = [next(reference) for _ in range(start + 3)]
    resumed = store.stream(
        "down.2.1", batch_size=batch, buffer_tokens=buffer, seed=seed, epochs=None, start_batch=start
    )
    for expected in head[start:]:
        assert torch.equal(next(resumed), expected)
