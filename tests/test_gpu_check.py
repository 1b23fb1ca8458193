"""The GPU check script runs here in its reduced mode, through the same launcher a device call uses,
and what a device call carries for it fits the device's 64 MiB transfer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRANSFER_LIMIT = 64 * 2**20
WHEEL_ALLOWANCE = 10 * 2**20  # the diffusers wheel `gpu_check.sh prepare` downloads: 6 MB for 0.42


def test_gpu_check_quick_mode_through_the_launcher(tmp_path):
    """`gpu_check.sh run --quick` with this checkout linked as the package: every part reports numbers."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "run", "--quick", "--device", "cpu"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for part in ("kernels", "sdxl", "stream"):
        assert "error" not in report[part], report[part]
    assert all(v["ratio_to_matmul"] > 0 for v in report["kernels"].values() if isinstance(v, dict))
    assert report["sdxl"]["shapes"]["down.2.1"] == [2, 8, 8, 32]  # tiny/sdxl's table at 64 px, batch 2
    assert report["sdxl"]["images_per_s_with_capture"] > 0 and report["stream"]["tokens_per_s"] > 0
    assert report["stream"]["last_fvu"] < 1.0  # the streamed SAE learned


def test_what_a_device_call_carries_fits_its_transfer():
    """Tracked files travel with every device call; the check adds the diffusers wheel (.device/wheels)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    tracked = sum((REPO / name.decode()).stat().st_size for name in files if name and (REPO / name.decode()).is_file())
    wheels = REPO / ".device" / "wheels"
    carried = sum(f.stat().st_size for f in wheels.glob("*.whl")) if wheels.is_dir() else 0
    print(f"tracked {tracked / 2**20:.1f} MiB + wheels {carried / 2**20:.1f} MiB")
    assert tracked + max(carried, WHEEL_ALLOWANCE) < TRANSFER_LIMIT
