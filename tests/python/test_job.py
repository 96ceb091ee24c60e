"""One job, three ways in: `convnet train`, `convnet-train` (the C++ binary, with cuda-convnet2's
option names) and convnet.train() prepare a run in the same engine code (convnet/job.h), so the
same run through each ends with bit-identical weights; the resume keeps the checkpoint's seed and
data set (refusing others), and continues from the newest intact checkpoint; the options' table is
the one both commands read."""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import convnet
from convnet import _core, cli

REPO = Path(__file__).resolve().parents[2]
DATA = "generated[count=256;classes=4;channels=1;size=16;seed=9]"
# Conv, pool, dropout, fc (tests/data/dropout_net_16.json, shared with the MPI ctest), read
# here at a 14-pixel crop.
MODEL = json.loads((REPO / "tests" / "data" / "dropout_net_16.json").read_text())
MODEL["layers"][0]["size"] = 14
# Crops, reflections, dropout, a schedule and the seed: everything that could differ between
# two preparations of a run.
RUN = ["--epochs", "2", "--crop", "14", "--mirror", "--seed", "3", "--schedule", "step[every=1;factor=0.5]",
       "--threads", "2"]


def convnet_train_binary() -> str:
    path = os.environ.get("CONVNET_TRAIN") or str(REPO / "build" / "ci" / "convnet-train")
    if not os.path.isfile(path):
        pytest.skip(f"convnet-train is not built ({path}; scripts/test.sh builds it, or set CONVNET_TRAIN)")
    return path


def tensors(checkpoint: str) -> dict:
    """Every tensor of a safetensors checkpoint as raw bytes, by name."""
    with open(checkpoint, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    return {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def batch_costs(log: str) -> list:
    return [e["cost"] for e in map(json.loads, open(log)) if e["event"] == "batch"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.json"
    path.write_text(json.dumps(MODEL))
    return str(path)


def test_the_same_run_through_each_front_end_gives_bit_identical_weights(model_file, tmp_path, capsys):
    binary = convnet_train_binary()
    # convnet-train with cuda-convnet2's names (--data-path, --mini, --save-path, --test-freq).
    r = subprocess.run([binary, "--layer-def", model_file, "--data-path", DATA, "--mini", "32", "--test-freq", "4",
                        "--save-path", str(tmp_path / "binary"), "--quiet", *RUN], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rc = cli.main(["train", model_file, "--data", DATA, "--batch", "32", "--test-every", "4",
                   "--save-dir", str(tmp_path / "cli"), "--quiet", "--no-plots", *RUN])
    assert rc == 0, capsys.readouterr().err
    prep = convnet.DataPrep(DATA, crop=14, mirror=True)
    convnet.train(json.dumps(MODEL), prep, epochs=2, batch=32, seed=3, test_every=4,
                  schedule="step[every=1;factor=0.5]", save_dir=str(tmp_path / "api"), progress=False)

    runs = {name: _core.latest_checkpoint(str(tmp_path / name)) for name in ("binary", "cli", "api")}
    assert all(p.endswith("ckpt-e0002-b000000.safetensors") for p in runs.values()), runs
    reference = tensors(runs["binary"])
    assert {"conv1.weights", "fc2.weights", "fc2.weights.velocity"} <= set(reference)
    for name in ("cli", "api"):
        other = tensors(runs[name])
        assert other.keys() == reference.keys()
        different = [k for k in reference if other[k] != reference[k]]
        assert not different, f"{name}: tensors differ from convnet-train's: {different}"
        assert batch_costs(str(tmp_path / name / "log.jsonl")) == batch_costs(str(tmp_path / "binary" / "log.jsonl"))
    # The weights did move: the comparison is not of two initialisations.
    start = convnet.Net(json.dumps(MODEL), seed=3).get_param("fc2.weights")
    trained = np.frombuffer(reference["fc2.weights"], np.float32)
    assert np.abs(trained - start.ravel()).max() > 1e-3


def test_convnet_train_resumes_with_the_checkpoints_seed(model_file, tmp_path, capsys):
    """A resumed run keeps its seed (data order, dropout masks): it ends where the uninterrupted
    run ends, bit for bit; a resume that asks for another seed is refused, naming both."""
    common = ["train", model_file, "--data", DATA, "--batch", "32", "--quiet", "--no-plots", "--crop", "14",
              "--mirror", "--threads", "2"]
    assert cli.main([*common, "--epochs", "2", "--seed", "3", "--save-dir", str(tmp_path / "whole")]) == 0
    assert cli.main([*common, "--epochs", "1", "--seed", "3", "--save-dir", str(tmp_path / "split")]) == 0
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "2", "--seed", "7", "--save-dir", str(tmp_path / "split"), "--resume"]) != 0
    err = capsys.readouterr().err
    assert "--seed 7 differs from the seed 3 of the run in" in err, err
    assert cli.main([*common, "--epochs", "2", "--save-dir", str(tmp_path / "split"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 8" in out, out
    whole = tensors(_core.latest_checkpoint(str(tmp_path / "whole")))
    split = tensors(_core.latest_checkpoint(str(tmp_path / "split")))
    assert whole == split


def test_a_resume_on_other_data_is_refused_unless_asked_for(model_file, tmp_path, capsys):
    common = ["train", model_file, "--batch", "32", "--quiet", "--no-plots", "--crop", "14", "--threads", "2",
              "--save-dir", str(tmp_path / "run")]
    assert cli.main([*common, "--data", DATA, "--epochs", "1"]) == 0
    other = DATA.replace("seed=9", "seed=10")
    capsys.readouterr()
    assert cli.main([*common, "--data", other, "--epochs", "2", "--resume"]) != 0
    err = capsys.readouterr().err
    assert f"trained on --data '{DATA}', this run reads '{other}'" in err and "--resume-other-data" in err, err
    assert not os.path.exists(tmp_path / "run" / "ckpt-e0002-b000000.safetensors")
    assert cli.main([*common, "--data", other, "--epochs", "2", "--resume", "--resume-other-data"]) == 0
    assert os.path.exists(tmp_path / "run" / "ckpt-e0002-b000000.safetensors")


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(model_file, tmp_path,
                                                                                         capsys):
    """Resuming a folder whose newest checkpoint was damaged (one flipped bit) continues from the
    newest intact one, says which and why, and ends bit-identical to an uninterrupted run; the
    temporary file a killed save left behind is removed."""
    common = ["train", model_file, "--data", DATA, "--batch", "32", "--quiet", "--no-plots", "--crop", "14",
              "--threads", "2", "--seed", "3", "--keep", "0"]
    assert cli.main([*common, "--epochs", "3", "--save-dir", str(tmp_path / "whole")]) == 0
    run = tmp_path / "split"
    assert cli.main([*common, "--epochs", "2", "--save-dir", str(run)]) == 0
    newest = run / "ckpt-e0002-b000000.safetensors"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0x10
    newest.write_bytes(bytes(data))
    debris = run / "ckpt-e0003-b000000.safetensors.tmp.999999999"  # no such process
    debris.write_bytes(b"partial")
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "3", "--save-dir", str(run), "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"not resuming from '{newest}'" in captured.err and "checksum" in captured.err, captured.err
    assert f"removed '{debris}'" in captured.err, captured.err
    assert "at step 8" in captured.out, captured.out  # from epoch 1's checkpoint
    assert (run / (newest.name + ".corrupt")).exists() and not debris.exists()
    assert tensors(str(run / "ckpt-e0003-b000000.safetensors")) == tensors(
        str(tmp_path / "whole" / "ckpt-e0003-b000000.safetensors"))


def test_both_commands_read_one_table_of_options():
    binary = convnet_train_binary()
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    parser_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for o in _core.job_options():
        assert f"--{o['name']}" in help_text and f"--{o['name']}" in parser_text, o["name"]
        for alias in o["aliases"]:
            assert f"--{alias}" in help_text, alias
    names = {o["name"] for o in _core.job_options()}
    assert {"batch", "save-dir", "test-every", "resume", "overwrite", "multiview-test"} <= names
    aliases = {a: o["name"] for o in _core.job_options() for a in o["aliases"]}
    assert aliases == {"data-path": "data", "mini": "batch", "test-freq": "test-every", "save-path": "save-dir",
                       "save-freq": "save-every"}


def test_both_commands_exit_3_on_divergence_and_name_the_checkpoint(model_file, tmp_path, capsys):
    binary = convnet_train_binary()
    args = ["--data", DATA, "--batch", "32", "--crop", "14", "--quiet", "--max-grad-norm", "1e-9"]
    r = subprocess.run([binary, "--layer-def", model_file, *args], capture_output=True, text=True)
    assert r.returncode == 3 and "exceeds the limit" in r.stderr, r.stderr
    assert cli.main(["train", model_file, *args, "--no-plots"]) == 3
    assert "exceeds the limit" in capsys.readouterr().err


def test_job_options_name_the_culprit():
    with pytest.raises(ValueError, match="unknown option --epoch "):
        _core.JobOptions([("epoch", "3")])
    with pytest.raises(ValueError, match="--batch 'x' is not a whole number >= 1"):
        _core.JobOptions([("mini", "x")])
    with pytest.raises(ValueError, match="--mirror is a flag"):
        _core.JobOptions([("mirror", "yes")])
    with pytest.raises(ValueError, match="--group 'conv' is not PREFIX=SCHEDULE"):
        _core.JobOptions([("group", "conv")])
    with pytest.raises(ValueError, match="--resume without a PATH needs --save-dir"):
        _core.JobOptions([("resume", "")])
    with pytest.raises(ValueError, match="--multiview-test needs --crop"):
        _core.JobOptions([("multiview-test", "1")])
    o = _core.JobOptions([("mini", "64"), ("batch", "16"), ("group", "conv=exp"), ("group", "fc=linear")])
    assert o.batch == 16  # the later one wins


def test_mpirun_two_ranks_of_convnet_train_equal_one_process(model_file, tmp_path, capsys):
    """`mpirun -np 2 python -m convnet train`: each rank trains on half of every batch and the
    gradients are summed over the ranks, so the weights are those of one process trained on the
    whole batches, up to float32 summation order (dropout included: each example's mask is keyed
    by its place in the global batch); rank 0 alone reports and writes."""
    import shutil
    import sys
    mpirun = shutil.which("mpirun")
    if not (_core.mpi_compiled() and mpirun):
        pytest.skip("this build has no MPI, or mpirun is missing (scripts/install-deps.sh installs Open MPI)")
    args = ["train", model_file, "--data", DATA, "--batch", "32", "--epochs", "2", "--mirror", "--crop", "14",
            "--threads", "1", "--quiet", "--no-plots"]
    assert cli.main([*args, "--save-dir", str(tmp_path / "one")]) == 0
    # Root may run Open MPI only when told; --oversubscribe: CI's machine may have fewer slots.
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", sys.executable, "-m", "convnet", *args,
                        "--save-dir", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done: 2 epochs, step 16") == 1 and "2 processes, 16 images each" in r.stdout, r.stdout
    one = tensors(_core.latest_checkpoint(str(tmp_path / "one")))
    two = tensors(_core.latest_checkpoint(str(tmp_path / "two")))
    assert one.keys() == two.keys()
    for name in one:
        a, b = np.frombuffer(one[name], np.float32), np.frombuffer(two[name], np.float32)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), name
    epochs = [e for e in map(json.loads, open(tmp_path / "two" / "log.jsonl")) if e["event"] == "epoch"]
    assert [len(set(e["weight_hashes"])) for e in epochs] == [1, 1] and len(epochs[0]["weight_hashes"]) == 2
    # The same through the Python API, convnet.train(), under mpirun.
    script = tmp_path / "train_api.py"
    script.write_text(
        "import sys, convnet\n"
        f"convnet.train(open(sys.argv[1]).read(), convnet.DataPrep({DATA!r}, crop=14, mirror=True), epochs=2,\n"
        "              batch=32, save_dir=sys.argv[2], progress=False)\n")
    r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", sys.executable, str(script), model_file,
                        str(tmp_path / "api")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    api = tensors(_core.latest_checkpoint(str(tmp_path / "api")))
    assert api.keys() == one.keys()
    for name in one:
        a, b = np.frombuffer(one[name], np.float32), np.frombuffer(api[name], np.float32)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), name
    # An error in the ranks ends them all, promptly, naming the rank.
    r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", sys.executable, "-m", "convnet", *args,
                        "--batch", "31"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "does not split over 2 processes" in r.stderr and "(rank " in r.stderr, r.stderr
