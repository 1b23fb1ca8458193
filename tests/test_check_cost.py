"""`diffdict check` states a run's cost before any work, and check and run refuse a run the disk cannot hold.

Expected: the store bytes `check` predicts equal the tensor bytes a harvest writes (with harvest.steps,
branches, tokens_per_image and prompts applied); a faked small free-space figure makes check and run
exit 2 with the numbers before anything is written; the shipped real configs stream and need under
100 GB, while a store-trained Turbo config would write about 3.9 TB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffdict.dictionaries.base import TokenBatch
from diffdict.dictionaries.jobs import stratified_positions
from diffdict.studies import cost as cost_module
from diffdict.studies.check import check_and_cost
from diffdict.studies.cli import main
from diffdict.studies.config import load_config, parse_config
from diffdict.studies.run import Run
from diffdict.studies.streaming import training_prompt_ids

REPO = Path(__file__).resolve().parents[1]
CONFIG = """
name = "cost"
out = "{out}"

[prompts]
source = "list"
list = ["a red circle", "a blue square", "a green star", "a big cat", "a small dog", "a tree left", "a car", "a house"]
eval_fraction = 0.25

[[models]]
name = "cfg"
id = "tiny/sdxl"
steps = 3
guidance = 5.0

[harvest]
hooks = ["mid.0", "up.0.1"]
batch_size = 3
prompts = 5
steps = [0, 2]
{extra}

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "cfg"
hook = "mid.0"
n = 64
k = 4
tokens = 4096
batch = 256
branch = "{branch}"
"""


def write_config(folder: Path, extra: str = "", branch: str = "cond") -> Path:
    path = folder / "cost.toml"
    path.write_text(CONFIG.format(out=folder / "run", extra=extra, branch=branch))
    return path


def stored_tensor_bytes(store: Path) -> dict[str, int]:
    """Tensor bytes per hook in a store's shards, read from the files."""
    found: dict[str, int] = {}
    for shard in sorted((store / "shards").glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            rows = json.loads(handle.metadata()["index"])
            for row in rows:
                tensor = handle.get_tensor(str(row["offset"]))
                found[row["hook"]] = found.get(row["hook"], 0) + tensor.numel() * tensor.element_size()
    return found


@pytest.mark.parametrize("extra", ["", 'branches = ["uncond"]\ntokens_per_image = 5'])
def test_predicted_store_bytes_equal_what_harvest_writes(tmp_path, extra):
    config = load_config(write_config(tmp_path, extra, branch="uncond" if extra else "cond"))
    _, cost = check_and_cost(config)
    (model,) = cost.models
    assert model.stored_prompts == 5 and model.harvest_generations == 5 and model.steps_kept == 2
    Run(config, progress=False).harvest()
    written = stored_tensor_bytes(tmp_path / "run" / "stores" / "cfg")
    predicted = {store.hook: store.tensor_bytes for store in model.stores}
    assert written == predicted
    assert model.branches_kept == (["uncond"] if extra else ["uncond", "cond"])
    if extra:  # a subsampled map lists its grid positions; a training stream's provenance carries them
        from diffdict.dictionaries.store_reader import ActivationStore

        store = ActivationStore(tmp_path / "run" / "stores" / "cfg")
        rows = store.index.filter(store.index["hook"] == "mid.0")
        assert all(len(p) == 5 and len(set(p)) == 5 and max(p) < 64 for p in rows["positions"].to_list())
        batch = next(store.stream("mid.0", batch_size=40, buffer_tokens=40, with_provenance=True))
        assert isinstance(batch, TokenBatch)
        listed = {(r["prompt_id"], r["step"], q) for r in rows.iter_rows(named=True) for q in r["positions"]}
        seen = zip(
            batch.provenance["prompt_id"].tolist(),
            batch.provenance["step"].tolist(),
            batch.provenance["position"].tolist(),
        )
        assert set(seen) <= listed


def test_stratified_positions_cover_every_cell():
    cells, count = 64, 5
    seen = torch.zeros(cells, dtype=torch.long)
    for image in range(cells):  # cells / gcd passes: each position kept equally often
        positions = stratified_positions(cells, count, image, "mid.0", 1)
        assert positions.unique().numel() == count
        seen[positions] += 1
    assert bool((seen == count).all())
    assert not torch.equal(
        stratified_positions(cells, count, 0, "mid.0", 1), stratified_positions(cells, count, 0, "mid.0", 2)
    )  # each step its own order


def small_disk(monkeypatch, free: int) -> None:
    monkeypatch.setattr(cost_module, "free_bytes", lambda path: (free, Path("/small-disk")))


def test_check_and_run_refuse_a_run_the_disk_cannot_hold(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    small_disk(monkeypatch, 1_000)
    for command in ("check", "run"):
        assert main([command, str(config), "--no-progress"] if command == "run" else [command, str(config)]) == 2
        error = capsys.readouterr().err
        assert "would write" in error and "/small-disk" in error and "1.0 KB free" in error
        assert 'train.source = "stream"' in error  # the fix
        assert "store mid.0" in error  # the numbers behind it
    assert not (tmp_path / "run").exists()  # refused before any work


def test_check_json(tmp_path, capsys):
    assert main(["check", str(write_config(tmp_path)), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["source"] == "store" and cost["disk_needed"] > 0
    assert [s["hook"] for s in cost["models"][0]["stores"]] == ["mid.0", "up.0.1"]


def test_shipped_real_configs_stream_and_fit_in_100_gb(monkeypatch):
    small_disk(monkeypatch, 10**14)
    for name in ("sdxl_turbo_saes", "flux_dictionaries", "sdxl_transfer"):
        _, cost = check_and_cost(load_config(REPO / "configs" / f"{name}.toml"))
        assert cost.source == "stream", name
        assert cost.disk_needed < 100e9, (name, cost.disk_needed)


def test_a_store_trained_turbo_config_would_write_terabytes(monkeypatch):
    """The Surkov protocol from stores: 1.5M images x 4 hooks x 256 tokens x 1280 x 2 B = 3.9 TB."""
    import tomllib

    small_disk(monkeypatch, 10**14)
    path = REPO / "configs" / "sdxl_turbo_saes.toml"
    table = tomllib.loads(path.read_text())
    table["train"]["source"] = "store"
    del table["harvest"]["prompts"]
    _, cost = check_and_cost(parse_config(table, source=str(path), path=path))
    assert 3.9e12 < cost.models[0].store_bytes < 4.0e12
    _, streamed = check_and_cost(load_config(path))
    assert streamed.models[0].full_store_bytes == cost.models[0].store_bytes  # what streaming does not write


def test_a_stream_never_trains_on_a_held_out_text():
    texts = ["a", "b", "c", "d", "a", "e", "f", "b", "g"]
    ids = training_prompt_ids(texts, stored=4, eval_fraction=0.5, split_seed=0)
    from diffdict.dictionaries.store_reader import held_out_prompts

    held = {texts[i] for i in held_out_prompts(texts[:4], None, 0.5, 0)}
    assert len(held) == 2
    assert all(texts[i] not in held for i in ids)
    assert len(ids) == len([t for t in texts if t not in held])  # every other prompt, beyond the stored ones too
