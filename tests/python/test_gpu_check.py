"""scripts/gpu-check.sh's own checks that need no GPU: what it refuses before spending device time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"


def run_check(tmp_path, skip):
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_SKIP=skip)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_a_misspelt_step_to_skip_stops_it_at_once_naming_the_steps(tmp_path):
    proc = run_check(tmp_path, "alexnet,kernel-bnch")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "GPU_CHECK_SKIP names 'kernel-bnch', which is not a step" in proc.stderr, proc.stderr
    assert "kernel-bench" in proc.stderr and "san-memcheck" in proc.stderr  # the steps it knows
    assert not (tmp_path / "out" / "summary.txt").exists(), "it started the check before refusing"
