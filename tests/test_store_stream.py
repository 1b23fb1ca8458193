"""Token streams: every token once per epoch, seeded shuffle, exact resume, split by prompt, bounded buffer."""

from __future__ import annotations

import pytest
import torch

from dict_fixtures import PROMPTS, FakeAdapter, one_thread  # noqa: F401 (fixture)
from diffdict.dictionaries.harvest import harvest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.set_num_threads(1)
    return harvest(
        FakeAdapter(),
        PROMPTS,
        [0, 1],
        ["down.2.1", "mid.0"],
        tmp_path_factory.mktemp("s"),
        dtype="fp32",
        batch_size=4,
        progress=False,
    )


def sorted_rows(x):
    return x[torch.argsort(x[:, 0])]


def test_one_epoch_yields_every_token_once_shuffled(store):
    everything = store.tokens(store.select("down.2.1"))  # 12 prompts x 2 seeds x 2 steps x 16 tokens
    batches = list(store.stream("down.2.1", batch_size=32, buffer_tokens=100, seed=5))
    streamed = torch.cat(batches)
    assert all(b.shape == (32, 16) for b in batches) and streamed.shape[0] == everything.shape[0]
    assert torch.equal(sorted_rows(streamed), sorted_rows(everything))
    assert not torch.equal(streamed, everything)  # shuffled, not in storage order
    again = torch.cat(list(store.stream("down.2.1", batch_size=32, buffer_tokens=100, seed=5)))
    other = torch.cat(list(store.stream("down.2.1", batch_size=32, buffer_tokens=100, seed=6)))
    assert torch.equal(streamed, again) and not torch.equal(streamed, other)


def test_resume_at_any_batch_is_exact_and_epochs_cycle(store):
    full = store.stream("down.2.1", batch_size=24, buffer_tokens=70, seed=1, epochs=None)
    reference = [next(full) for _ in range(40)]  # crosses the epoch boundary (32 batches per epoch)
    for start in (1, 7, 31, 33):
        resumed = store.stream("down.2.1", batch_size=24, buffer_tokens=70, seed=1, epochs=None, start_batch=start)
        for expected in reference[start : start + 5]:
            assert torch.equal(next(resumed), expected)


def test_split_is_by_prompt_and_filters_apply(store):
    train = store.select("mid.0", split="train", eval_fraction=0.25)
    held_out = store.select("mid.0", split="eval", eval_fraction=0.25)
    assert set(train["prompt_id"]).isdisjoint(set(held_out["prompt_id"]))
    assert len(set(held_out["prompt_id"])) == 3 and train.height + held_out.height == 12 * 2 * 2
    assert set(store.select("mid.0", steps=[1])["step"]) == {1}
    assert set(store.select("mid.0", t_range=(0.9, 1.0))["step"]) == {0}
    with pytest.raises(ValueError, match="no maps .* branch='uncond'"):
        store.select("mid.0", branch="uncond")
    with pytest.raises(ValueError, match=r"hook 'up.0.1' is not in the store.*\['down.2.1', 'mid.0'\]"):
        store.select("up.0.1")


def test_provenance_follows_the_tokens(store):
    (batch,) = list(store.stream("mid.0", batch_size=40, buffer_tokens=48, seed=0, with_provenance=True))[:1]
    maps = store.read_maps(store.index[batch.provenance["map_row"].tolist()])
    for i in range(40):
        assert torch.equal(batch.x[i], maps[i][batch.provenance["position"][i]])
    rows = store.index[batch.provenance["map_row"].tolist()]
    assert rows["prompt_id"].to_list() == batch.provenance["prompt_id"].tolist()


def test_only_one_window_is_loaded_at_a_time(store, monkeypatch):
    loaded = []
    original = store.read_maps
    monkeypatch.setattr(
        store, "read_maps", lambda rows: loaded.append(int((rows["h"] * rows["w"]).sum())) or original(rows)
    )
    stream = store.stream("down.2.1", batch_size=16, buffer_tokens=64, seed=0)
    next(stream)
    assert loaded == [64]  # the first batch needs one window of 64 tokens, not the 768 of the store
    list(stream)
    assert max(loaded) == 64 and sum(loaded) == 768
