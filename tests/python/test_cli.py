"""The `convnet` command end to end on a tiny generated data set: train (with plots and resume),
test (single and 10-view), predict, summary, plot, --help, and errors that name the culprit."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convnet import cli

DATA = "generated[count=512;classes=4;channels=1;size=16;seed=5]"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    from PIL import Image
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100, (path, im.size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder: small_convnet trained 3 epochs on 14x14 crops of the generated data."""
    run_dir = tmp_path_factory.mktemp("run")
    rc = cli.main(["train", "small_convnet", "--data", DATA, "--epochs", "3", "--batch", "32", "--lr", "0.01",
                   "--crop", "14", "--save-dir", str(run_dir), "--quiet", "--schedule", "plateau[patience=1]"])
    assert rc == 0
    return run_dir


def test_train_writes_checkpoints_log_and_plots(trained):
    files = set(os.listdir(trained))
    assert {"log.jsonl", "curves.png", "filters.png", "predictions.png"} <= files, files
    assert any(f.startswith("ckpt-e0003-b000000") for f in files), files
    for png in ("curves.png", "filters.png", "predictions.png"):
        assert_png(trained / png)
    last = json.loads(open(trained / "log.jsonl").read().splitlines()[-1])
    assert last["event"] == "epoch" and last["epoch"] == 3


def test_resume_continues_the_run(trained, capsys, tmp_path):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for f in os.listdir(trained):  # resume a copy, leaving the fixture's run as it is
        (run_dir / f).write_bytes((trained / f).read_bytes())
    rc, out, _ = run(capsys, "train", "small_convnet", "--data", DATA, "--epochs", "4", "--batch", "32",
                     "--lr", "0.01", "--crop", "14", "--save-dir", str(run_dir), "--quiet", "--resume", "--no-plots")
    assert rc == 0, out
    assert "resumed from" in out and "done: 4 epochs, step 64" in out, out


def test_test_single_and_multiview(trained, capsys):
    rc, out, _ = run(capsys, "test", str(trained))
    assert rc == 0 and "128 test images, single-view" in out, out
    acc = float(out.split("accuracy ")[1].rstrip(")\n"))
    assert acc > 0.8, out
    rc, out, err = run(capsys, "test", str(trained), "--multiview")
    assert rc == 0 and "10-view" in out, out


def test_predict_image_files(trained, capsys, tmp_path):
    from PIL import Image
    path = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)).save(path)
    rc, out, _ = run(capsys, "predict", str(trained), str(path), "--top-k", "3")
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == str(path) and len(lines) == 4
    probs = [float(l.split("%")[0]) for l in lines[1:]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.01


def test_predict_unreadable_image_names_it(trained, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="bad.png"):
        cli.main(["predict", str(trained), str(bad)])


def test_summary_shows_receptive_fields(capsys):
    rc, out, _ = run(capsys, "summary", "vgg-A", "--size", "32")
    assert rc == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["conv1_1"][-2] == "3"
    assert rows["conv3_2"][-2] == "26"  # pool2 (rf 10, jump 4), then two 3x3 convs: + 8 each
    rc, out, _ = run(capsys, "summary", "vgg-C", "--size", "32")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["conv1_2"][-2] == "5"  # two stacked 3x3 convolutions see 5x5
    assert rows["conv3_3"][-2] == rows["conv3_2"][-2] == "32"  # C's 1x1 conv adds nothing
    assert "total" in out


def test_plot_command(trained, tmp_path, capsys):
    rc, out, _ = run(capsys, "plot", str(trained), "--out", str(tmp_path))
    assert rc == 0
    for png in ("curves.png", "filters.png", "predictions.png"):
        assert_png(tmp_path / png)


def test_every_option_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"convnet {name}: option {action.option_strings or action.dest} has no help"


def test_errors_name_the_culprit(capsys, tmp_path):
    with pytest.raises(SystemExit, match="'no_such_model' is neither a model file nor a zoo model"):
        cli.main(["summary", "no_such_model"])
    rc, _, err = run(capsys, "train", "small_convnet", "--data", str(tmp_path / "missing"), "--quiet")
    assert rc == 2 and "missing" in err and "is not a folder" in err
    with pytest.raises(SystemExit, match="no checkpoint in"):
        cli.main(["test", str(tmp_path)])
    with pytest.raises(SystemExit, match="small_convnet has no --init choice"):
        cli.main(["train", "small_convnet", "--data", DATA, "--init", "xavier"])
    model = tmp_path / "m.json"
    model.write_text(cli.resolve_model("small_convnet"))
    with pytest.raises(SystemExit, match="--init is for zoo models"):
        cli.main(["train", str(model), "--data", DATA, "--init", "xavier"])
    # A prefix of an option is not the option (argparse would take --epoch for --epochs).
    with pytest.raises(SystemExit):
        cli.main(["train", "small_convnet", "--data", DATA, "--epoch", "3"])
    assert "unrecognized arguments: --epoch 3" in capsys.readouterr().err
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--scale", "1/255", "--quiet")
    assert rc == 2 and "scale '1/255' is neither a positive number nor 'std'" in err, err



def test_solver_option_trains_and_is_recorded(capsys, tmp_path):
    rc, out, err = run(capsys, "train", "small_convnet", "--data", DATA, "--epochs", "1", "--batch", "32",
                       "--lr", "0.002", "--solver", "adamw", "--adam-betas", "0.85,0.99", "--adam-eps", "1e-7",
                       "--save-dir", str(tmp_path / "a"), "--quiet", "--no-plots")
    assert rc == 0, err
    from convnet import _core
    meta = _core.read_checkpoint_meta(_core.latest_checkpoint(str(tmp_path / "a")))
    assert meta["state"]["run"]["solver"] == {"name": "adamw", "beta1": 0.85, "beta2": 0.99, "eps": 1e-7}
    assert (meta["solver"].name, meta["solver"].beta1, meta["solver_step"]) == ("adamw", 0.85, 16)
    # A resume with another solver names both.
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--epochs", "2", "--batch", "32",
                     "--save-dir", str(tmp_path / "a"), "--resume", "--quiet", "--no-plots")
    assert rc == 2 and "saved by solver 'adamw', but this net's solver is 'sgd'" in err, err


def test_solver_errors_name_the_culprit(capsys):
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--solver", "adam", "--quiet")
    assert rc == 2 and "unknown solver 'adam' (known: sgd, nesterov, adamw)" in err, err
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--solver", "adamw",
                     "--adam-betas", "0.9,1.5", "--quiet")
    assert rc == 2 and "beta2 must be in [0, 1), got 1.5" in err, err
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--adam-eps", "1e-6", "--quiet")
    assert rc == 2 and "apply to --solver adamw only, not 'sgd'" in err, err
    rc, _, err = run(capsys, "train", "small_convnet", "--data", DATA, "--solver", "adamw", "--adam-betas", "0.9")
    assert rc == 2 and "'0.9' is not two numbers B1,B2" in err, err


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "convnet", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "summary" in r.stdout


def test_a_second_run_into_the_same_folder_needs_resume_or_overwrite(trained, tmp_path, capsys):
    run_dir = tmp_path / "again"
    run_dir.mkdir()
    for f in os.listdir(trained):
        (run_dir / f).write_bytes((trained / f).read_bytes())
    args = ["train", "small_convnet", "--data", DATA, "--epochs", "1", "--batch", "32", "--crop", "14",
            "--save-dir", str(run_dir), "--quiet", "--no-plots"]
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "holds checkpoints of an earlier run: --resume to continue it, --overwrite" in err, err
    rc, out, _ = run(capsys, *args, "--overwrite")
    assert rc == 0 and "done: 1 epochs, step 16" in out, out
    names = sorted(os.listdir(run_dir))
    assert [n for n in names if n.startswith("ckpt-")] == ["ckpt-e0001-b000000.safetensors"], names
    assert sum(1 for _ in open(run_dir / "log.jsonl")) == 16 + 1 + 1  # batches, test, epoch
