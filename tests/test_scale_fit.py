"""Data-parallel fitting on 2 CPU processes (gloo) against one process on the same batches.

Each rank gets its contiguous half of every global batch, as `dictionaries.train` slices them.
ITDA must come out identical to one process (atoms, Gram, provenance: same bits); the top-k
SAE equal within float rounding, and bit-identical across the ranks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from dict_fixtures import free_port, one_thread, planted_atoms, planted_data  # noqa: F401 (fixture)
from diffdict.dictionaries import distributed
from diffdict.dictionaries.itda import ITDA, ITDAConfig
from diffdict.dictionaries.store_reader import TokenBatch
from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")
RANKS = 2
D, BATCH, STEPS = 16, 64, 12
SAE_TOLERANCE = 1e-5  # max |weight difference| after STEPS Adam steps; float-rounding scale


def batches() -> list[TokenBatch]:
    """STEPS global batches (BATCH, D) of planted sparse data, with per-token provenance."""
    x = planted_data(planted_atoms(48, D, seed=3), STEPS * BATCH, active=3, seed=4, noise=0.01)
    out = []
    for step in range(STEPS):
        rows = torch.arange(step * BATCH, (step + 1) * BATCH)
        provenance = {
            "map_row": rows // 16,
            "prompt_id": rows // 32,
            "seed": torch.zeros(BATCH, dtype=torch.long),
            "step": torch.full((BATCH,), step),
            "position": rows % 16,
        }
        out.append(TokenBatch(x[rows], provenance))
    return out


def make(kind: str, **options):
    if kind == "itda":
        return ITDA(ITDAConfig(d=D, L=4, threshold=0.2, **options))
    # dead_tokens small, so AuxK runs (and its whole-batch normaliser is exercised)
    return TopKSAE(TopKSAEConfig(d=D, n=64, k=4, k_aux=8, dead_tokens=2 * BATCH, lr=1e-2, **options))


def fit(dictionary, world: distributed.World | None) -> None:
    for batch in batches():
        if world is None:
            dictionary.partial_fit(batch)
        else:
            rows = world.share(BATCH)
            dictionary.partial_fit(
                TokenBatch(batch.x[rows], {k: v[rows] for k, v in batch.provenance.items()}), world=world
            )


def state(dictionary) -> dict[str, torch.Tensor]:
    out = {f"w.{k}": v.clone() for k, v in dictionary.tensors().items()}
    out.update({f"t.{k}": v.clone() for k, v in dictionary.training_tensors().items()})
    out["tokens_seen"] = torch.tensor([dictionary.tokens_seen])
    return out


CASES = {
    "itda-plain": ("itda", {}),
    "itda-standardized-capped": ("itda", {"input_norm": "standardize", "max_size": 40}),
    "topk_sae": ("topk_sae", {}),
}


def fit_case(case: str, world: distributed.World | None) -> dict[str, torch.Tensor]:
    kind, options = CASES[case]
    dictionary = make(kind, **options)
    if kind == "topk_sae":  # every rank initialises from the same sample, as train.py does
        dictionary.initialize(torch.cat([b.x for b in batches()[:2]]))
    fit(dictionary, world)
    return state(dictionary)


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    world = distributed.world()
    for case in CASES:
        save_file(
            {k: v.contiguous() for k, v in fit_case(case, world).items()},
            os.path.join(folder, f"{case}-rank{rank}.safetensors"),
        )
    try:  # work given to rank 0 fails there: every rank must raise, none may wait forever
        distributed.on_main(lambda: int("not a number"), world)
    except Exception as error:
        Path(folder, f"failure-rank{rank}.txt").write_text(f"{type(error).__name__}: {error}")
    distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, list]:
    """Per case, each rank's final state; and what each rank raised when rank 0 failed. One spawn
    for all of it: importing torch in the children is the slow part."""
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_worker, args=(free_port(), str(folder)), nprocs=RANKS, start_method="spawn", join=True)
    states = {
        case: [load_file(str(folder / f"{case}-rank{rank}.safetensors")) for rank in range(RANKS)] for case in CASES
    }
    states["failures"] = [(folder / f"failure-rank{rank}.txt").read_text() for rank in range(RANKS)]
    return states


def test_a_failure_on_rank_0_stops_every_rank(two_ranks):
    main, other = two_ranks["failures"]
    assert main.startswith("ValueError: invalid literal for int()")
    assert other.startswith("RankFailed: rank 0 failed, so rank 1 stops too: ValueError: invalid literal")


@pytest.mark.parametrize("case", ["itda-plain", "itda-standardized-capped"])
def test_itda_on_two_ranks_is_identical_to_one_process(two_ranks, case):
    single = fit_case(case, None)
    assert single["w.atoms"].shape[0] > 10  # grew over several batches
    cap = CASES[case][1].get("max_size")
    if cap:
        assert single["w.atoms"].shape[0] == cap  # the cap cut one batch's candidates short
    for rank_state in two_ranks[case]:
        assert rank_state.keys() == single.keys()
        for key, value in single.items():
            assert torch.equal(rank_state[key], value), key
    # candidates came from both ranks' halves (rows < BATCH/2 are rank 0's): the gather carried them
    source_rank = (single["w.provenance.map_row"] % (BATCH // 16)) // (BATCH // 32)
    assert set(source_rank.tolist()) == {0, 1}


def test_topk_sae_on_two_ranks_matches_one_process(two_ranks):
    ranks = two_ranks["topk_sae"]
    single = fit_case("topk_sae", None)
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks differ in {key}"
    assert int(ranks[0]["tokens_seen"]) == STEPS * BATCH
    assert bool((single["t.tokens_since_fired"] >= 2 * BATCH).any()), "AuxK never ran; the test would be weak"
    # dead-latent counters are reduced over ranks: the same latents fired, so the same are dead
    assert torch.equal(ranks[0]["t.tokens_since_fired"], single["t.tokens_since_fired"])
    worst = max(
        float((ranks[0][f"w.{name}"] - single[f"w.{name}"]).abs().max())
        for name in ("W_enc", "b_enc", "W_dec", "b_dec")
    )
    initial = make("topk_sae")
    assert isinstance(initial, TopKSAE)
    moved = float((single["w.W_dec"] - initial.W_dec).abs().max())
    print(f"SAE 2 ranks vs 1 process: max |weight difference| {worst:.2e} (weights moved by {moved:.2e})")
    assert moved > 100 * SAE_TOLERANCE  # training did change the weights
    assert worst < SAE_TOLERANCE
