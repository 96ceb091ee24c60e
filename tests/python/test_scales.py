"""VGG's scale jittering and single-scale test through the `convnet` command: the options train,
are recorded in the run, and are refused where they cannot work, naming the option."""
import pytest

from convnet import cli

DATA = "generated[count=256;classes=4;channels=1;size=16;seed=7]"


def test_train_with_scale_jittering_and_a_test_scale(tmp_path, capsys):
    rc = cli.main(["train", "small_convnet", "--data", DATA, "--epochs", "3", "--batch", "32", "--crop", "16",
                   "--scale-jitter", "16,24", "--test-scale", "20", "--save-dir", str(tmp_path / "run"),
                   "--quiet", "--no-plots", "--lr", "0.01"])
    out = capsys.readouterr().out
    assert rc == 0, out
    acc = float(out.split("test accuracy ")[1].split()[0].rstrip(","))
    assert acc > 0.5, out  # it learns through the rescaling (chance 0.25)
    _, _, run = cli.load_run(cli.checkpoint_path(str(tmp_path / "run")), "cpu")
    assert run["scale_jitter"] == [16, 24] and run["test_scale"] == 20, run


@pytest.mark.parametrize("args,message", [
    (["--scale-jitter", "24"], "must be MIN,MAX"),
    (["--scale-jitter", "24,16", "--crop", "16"], "must be MIN,MAX with 0 < MIN <= MAX"),
    (["--scale-jitter", "16,24"], "needs a --crop of at most 16"),
    (["--scale-jitter", "16,24", "--crop", "20"], "needs a --crop of at most 16"),
    (["--test-scale", "12", "--crop", "16"], "--test-scale 12 needs a --crop of at most 12"),
])
def test_bad_scale_options_are_named(args, message, capsys):
    rc = cli.main(["train", "small_convnet", "--data", DATA, "--epochs", "1", "--quiet", *args])
    err = capsys.readouterr().err
    assert rc != 0 and message in err, err


def test_python_pipeline_takes_the_scale_options():
    import numpy as np
    from convnet.data import Pipeline
    from convnet.train import DataPrep
    source = DataPrep(DATA).train_source

    def batches(**kw):
        return [b.images() for b in Pipeline(source, 32, seed=3, train=True, crop=16, mirror=True, **kw).epoch()]

    plain, same = batches(), batches(scale_jitter=(16, 16))
    assert all(np.array_equal(a, b) for a, b in zip(plain, same))  # S = the image's size: the plain crop
    jittered = batches(scale_jitter=(16, 24))
    assert jittered[0].shape == plain[0].shape and not np.array_equal(jittered[0], plain[0])
    test = [b.images() for b in Pipeline(source, 32, train=False, crop=16, test_scale=20).epoch()]
    assert test[0].shape == plain[0].shape
    with pytest.raises(ValueError, match="scale jittering"):
        Pipeline(source, 32, train=True, crop=20, scale_jitter=(16, 24))
    with pytest.raises(ValueError, match=r"scale_jitter must be \(min, max\)"):
        Pipeline(source, 32, train=True, crop=16, scale_jitter=(16,))
