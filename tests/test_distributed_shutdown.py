"""distributed.shutdown on a real 2-rank gloo group: a rank that ended well but whose peer
failed (and so left without waiting) must report failure instead of crashing or hanging."""

import subprocess
import sys
from pathlib import Path

import pytest

from dict_fixtures import free_port

REPO = Path(__file__).resolve().parents[1]

# Each rank joins the group; the failing rank leaves as after an error (no waiting), the
# other ends normally and prints what shutdown returned.
RANK_SCRIPT = """
import sys
from datetime import timedelta
import torch.distributed as dist
from diffdict.dictionaries import distributed
rank, failing, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}",
                        timeout=timedelta(seconds=60))
if rank == failing:
    distributed.shutdown(wait_for_peers=False)
else:
    print(f"peers_ok={distributed.shutdown(wait_for_peers=True)}")
"""


@pytest.mark.parametrize("failing_rank", [0, 1], ids=["store-host-failed", "worker-failed"])
def test_rank_that_ended_well_reports_a_failed_peer(failing_rank):
    port = str(free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(rank), str(failing_rank), port],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    survivor_out, survivor_err = outputs[1 - failing_rank]
    assert "peers_ok=False" in survivor_out, outputs
    assert f"rank {1 - failing_rank}: finished, but another rank ended with an error" in survivor_err
