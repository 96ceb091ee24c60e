"""Kill trials: `convnet train` killed with SIGKILL at random moments (some of them inside a
checkpoint write, where a save is most of the work) and resumed each time. After every kill the
newest checkpoint loads (a partial file is never taken for one), --keep holds (one more only in
the moment between a save's rename and its pruning), and the run, resumed to the end, equals an
uninterrupted one bit for bit, with no temporary file left behind. A full disk during a save (a
file-size limit, RLIMIT_FSIZE, in place of a small file system): a clear error naming the file,
and the previous checkpoint intact.

CONVNET_KILL_TRIALS=N sets the number of kills (default 10, seconds in all; docs/RELIABILITY.md
records a longer run)."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import convnet
from convnet import _core

REPO = Path(__file__).resolve().parents[2]
DATA = "generated[count=2048;classes=4;channels=1;size=16;seed=9]"
KEEP = 2
# 8 epochs of 64 batches (under a second on an idle 2-core machine, several on a busy one), a
# checkpoint every 2 batches: saves (each fsynced) are a large share of the run.
EPOCHS = 8
RUN = ["--data", DATA, "--batch", "32", "--crop", "14", "--mirror", "--epochs", str(EPOCHS), "--save-every", "2",
       "--keep", str(KEEP), "--seed", "5", "--threads", "1", "--quiet", "--no-plots"]
KILLS = int(os.environ.get("CONVNET_KILL_TRIALS", "10"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = json.loads((REPO / "tests" / "data" / "dropout_net_16.json").read_text())
    model["layers"][0]["size"] = 14
    path = tmp_path_factory.mktemp("model") / "model.json"
    path.write_text(json.dumps(model))
    return str(path)


def train_command(model_file, save_dir, *extra):
    return [sys.executable, "-m", "convnet", "train", model_file, *RUN, "--save-dir", str(save_dir), *extra]


def tensors(checkpoint: str) -> dict:
    net = convnet.Net.from_checkpoint(checkpoint)  # verifies the checksum and the values
    return {name: net.get_param(name).tobytes() for name in net.param_names()}


def test_sigkill_at_random_moments_never_loses_a_checkpoint(model_file, tmp_path):
    reference = tmp_path / "whole"
    started = time.monotonic()
    subprocess.run(train_command(model_file, reference), check=True, capture_output=True)
    whole_run_s = time.monotonic() - started  # start-up included: the kills are timed against it
    final = f"ckpt-e{EPOCHS:04d}-b000000.safetensors"
    assert (reference / final).exists()

    run = tmp_path / "killed"
    rng = random.Random(2026)
    kills = during_save = runs = 0
    while kills < KILLS:
        runs += 1
        assert runs <= 4 * KILLS, f"{kills} kills in {runs} runs: the runs end before they are killed"
        p = subprocess.Popen(train_command(model_file, run, "--resume"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 0.95) * whole_run_s)
        if p.poll() is not None:  # it finished first: the run is complete, start again
            assert p.returncode == 0, p.stderr.read().decode()
            p.stderr.close()
            assert (run / final).exists()
            for f in run.iterdir():
                f.unlink()
            continue
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
        kills += 1
        names = [f.name for f in run.iterdir()] if run.exists() else []
        during_save += any(".tmp." in n for n in names)
        checkpoints = _core.list_checkpoints(str(run))
        assert len(checkpoints) <= KEEP + 1, names
        if checkpoints:
            tensors(checkpoints[-1])  # the newest loads

    done = subprocess.run(train_command(model_file, run, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = sorted(f.name for f in run.iterdir())
    assert not [n for n in names if ".tmp." in n], names
    assert len(_core.list_checkpoints(str(run))) == KEEP, names
    assert tensors(str(run / final)) == tensors(str(reference / final))
    print(f"{kills} kills in {runs} runs ({whole_run_s:.1f} s a whole run), {during_save} inside a checkpoint write")


def test_a_full_disk_during_a_save_is_a_clear_error_and_the_previous_checkpoint_stands(model_file, tmp_path):
    run = tmp_path / "run"
    subprocess.run(train_command(model_file, run, "--epochs", "1"), check=True, capture_output=True)
    previous = run / "ckpt-e0001-b000000.safetensors"
    before = previous.read_bytes()
    size = len(before)

    def small_disk():
        # Writes past `size` bytes fail (EFBIG) instead of killing the process (SIGXFSZ).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    r = subprocess.run(train_command(model_file, run, "--epochs", "2", "--resume", "--log", str(tmp_path / "log")),
                       capture_output=True, text=True, preexec_fn=small_disk)
    assert r.returncode != 0
    assert "cannot save '" + str(run / "ckpt-e0001-b000002.safetensors") + "'" in r.stderr, r.stderr
    assert "File too large" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert previous.read_bytes() == before
    assert not [f.name for f in run.iterdir() if ".tmp." in f.name]
    assert _core.latest_checkpoint(str(run)) == str(previous)
