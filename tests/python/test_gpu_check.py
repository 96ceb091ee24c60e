"""scripts/gpu-check.sh's own checks that need no GPU: what it refuses before spending device time."""

from __future__ import annotations

import os
import re
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


def test_every_step_the_script_runs_by_name_can_be_skipped(tmp_path):
    """The list of steps GPU_CHECK_SKIP accepts keeps up with the steps: each `run_step NAME`."""
    proc = run_check(tmp_path, "no-such-step")
    listed = proc.stderr.split("(steps: ")[1].rstrip(")\n").split()
    named = set(re.findall(r"^\s*(?:if )?run_step ([a-z][a-z-]*) ", SCRIPT.read_text(), re.M))
    assert named, "no run_step calls found: the pattern no longer matches the script"
    assert named <= set(listed), named - set(listed)
    assert {"san-memcheck", "san-racecheck", "san-synccheck", "pytest-2"} <= set(listed), listed
