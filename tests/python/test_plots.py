"""convnet.plots: learning curves from a JSON-lines log, filter grids, prediction grids."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402

import convnet  # noqa: E402
from convnet import plots, zoo  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path, min_height=100, min_width=100):
    """The PNG's pixels, after checking the signature, the size and that it is not blank."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width
    assert pixels[..., :3].std() > 0.01  # something was drawn
    return pixels


def write_log(path, epochs=3, batches=40, cut_off=True):
    """A log as the trainer writes it: batch events, a test event and an epoch event per epoch,
    the learning rate divided by 10 each epoch; the last line cut off mid-write."""
    rng = np.random.default_rng(0)
    lines = []
    step = 0
    for epoch in range(1, epochs + 1):
        lr = 0.01 / 10 ** (epoch - 1)
        for b in range(1, batches + 1):
            step += 1
            ef = epoch - 1 + b / batches
            lines.append({"event": "batch", "epoch": epoch, "batch": b, "step": step,
                          "epoch_float": ef, "cost": 2.3 / (1 + ef) + rng.normal(0, 0.1),
                          "top1_error": 0.9 / (1 + ef), "top5_error": 0.1 / (1 + ef), "lr": lr,
                          "elapsed_s": step * 0.1, "images_per_s": 500.0, "extra_key": [1, 2]})
        test = {"cost": 2.0 / (1 + epoch), "top1_error": 0.8 / (1 + epoch), "top5_error": 0.01}
        lines.append(dict(event="test", epoch=epoch, batch=batches, step=step, epoch_float=epoch,
                          elapsed_s=step * 0.1, **test))
        lines.append(dict(event="epoch", epoch=epoch, step=step, train_cost=1.0, train_top1_error=0.3,
                          train_top5_error=0.02, lr=lr, elapsed_s=step * 0.1,
                          **{"test_" + k: v for k, v in test.items()}))
    text = "\n".join(json.dumps(l) for l in lines) + "\n"
    if cut_off:
        text += json.dumps(lines[0])[:25]  # the trainer was killed mid-line
    path.write_text(text)
    return len(lines)


# ---- the log ----
def test_read_log_skips_a_cut_off_line_with_a_warning(tmp_path):
    log = tmp_path / "train.jsonl"
    count = write_log(log)
    with pytest.warns(UserWarning, match=r"train\.jsonl:127: skipped"):
        events = plots.read_log(log)
    assert len(events) == count == 3 * 42
    assert [e["event"] for e in events[39:42]] == ["batch", "test", "epoch"]


def test_read_log_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        plots.read_log(missing)
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        plots.plot_curves(missing, tmp_path / "c.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl.*no events"):
        plots.plot_curves(empty, tmp_path / "c.png")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"event": "ba\n[1, 2]\n\n')
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no events"):
        plots.read_log(garbage)
    assert not (tmp_path / "c.png").exists()


def test_smooth_is_a_trailing_mean():
    assert np.allclose(plots.smooth([1, 2, 3, 4], window=2), [1, 1.5, 2.5, 3.5])
    assert np.allclose(plots.smooth([5.0] * 30), 5.0)
    assert np.allclose(plots.smooth([1, 3], window=1), [1, 3])


def test_missing_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plots.plot_filters(np.zeros((1, 1, 3, 3)), tmp_path / "f.png")


# ---- curves ----
def test_plot_curves_writes_a_png(tmp_path):
    log = tmp_path / "train.jsonl"
    write_log(log)
    with pytest.warns(UserWarning, match="skipped"):
        path = plots.plot_curves(log, tmp_path / "curves.png")
    assert path == str(tmp_path / "curves.png")
    read_png(path, min_height=600, min_width=500)


def test_plot_curves_from_epoch_events_only(tmp_path):
    log = tmp_path / "epochs.jsonl"
    lines = [{"event": "epoch", "epoch": e, "step": 10 * e, "train_cost": 1 / e,
              "train_top1_error": 0.5 / e, "train_top5_error": 0.1, "lr": 0.1 / e, "elapsed_s": e}
             for e in (1, 2, 3)]  # no test_* keys: the trainer ran without a test set
    log.write_text("\n".join(json.dumps(l) for l in lines))
    read_png(plots.plot_curves(log, tmp_path / "epochs.png"))


# ---- filters ----
def test_filter_grid_scales_each_filter_separately():
    w = np.zeros((4, 1, 3, 3), np.float32)
    w[0] = np.arange(9).reshape(3, 3)           # 0..8
    w[1] = 1000 + 10 * np.arange(9).reshape(3, 3)  # a far larger range
    w[2] = -np.arange(9).reshape(3, 3)
    grid = plots.filter_grid(w, gap=1)          # 2 x 2 filters, 1 pixel apart
    assert grid.shape == (2 * 4 + 1, 2 * 4 + 1)
    tile = lambda i: grid[1 + 4 * (i // 2):4 + 4 * (i // 2), 1 + 4 * (i % 2):4 + 4 * (i % 2)]
    assert np.allclose(tile(0), np.arange(9).reshape(3, 3) / 8)
    assert np.allclose(tile(1), tile(0))        # same pattern, same picture, whatever the scale
    assert np.allclose(tile(2), 1 - tile(0))
    assert np.allclose(tile(3), 0.5)            # a constant filter is mid-grey
    assert np.all(grid[0] == 1) and np.all(grid[:, 4] == 1)  # white gaps


def test_filter_grid_rgb_and_grey_channels():
    rng = np.random.default_rng(0)
    rgb = plots.filter_grid(rng.normal(size=(5, 3, 4, 4)))
    assert rgb.shape == (2 * 5 + 1, 3 * 5 + 1, 3)  # 3 columns, 2 rows of colour tiles
    grey = plots.filter_grid(rng.normal(size=(4, 2, 4, 4)))
    assert grey.shape == (2 * 5 + 1, 2 * 2 * 5 + 1)  # each filter's 2 channels side by side
    grey3 = plots.filter_grid(rng.normal(size=(5, 3, 4, 4)), channels_as_rgb=False)
    assert grey3.ndim == 2
    with pytest.raises(ValueError, match="3 input channels.*2"):
        plots.filter_grid(rng.normal(size=(4, 2, 4, 4)), channels_as_rgb=True)
    with pytest.raises(ValueError, match=r"F x C x K x K.*\(4, 4\)"):
        plots.filter_grid(np.zeros((4, 4)))


def test_plot_filters_grey_rgb_and_two_towers(tmp_path):
    net = convnet.Net(zoo.fashion_alexnet())  # conv1a, conv1b: 32 x 1 x 5 x 5
    grey = net.get_param("conv1a.weights")
    assert grey.shape == (32, 1, 5, 5)
    read_png(plots.plot_filters(grey, tmp_path / "grey.png"))
    rgb = np.random.default_rng(0).normal(size=(48, 3, 11, 11)).astype(np.float32)
    pixels = read_png(plots.plot_filters(rgb, tmp_path / "rgb.png"))
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 0.1  # colour, not grey
    towers = [grey, net.get_param("conv1b.weights")]
    one = read_png(tmp_path / "grey.png")
    two = read_png(plots.plot_filters(towers, tmp_path / "towers.png"))
    assert two.shape[1] > 1.5 * one.shape[1]  # side by side


# ---- predictions ----
def test_plot_predictions(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(10)]
    probs = rng.dirichlet(np.ones(10), size=6)
    labels = np.array([0, 1, 2, 3, 4, probs[5].argmax()])
    grey = rng.normal(100, 50, size=(6, 1, 28, 28))  # any range
    read_png(plots.plot_predictions(grey, labels, probs, names, tmp_path / "grey.png"),
             min_height=300, min_width=500)
    colour = rng.uniform(-1, 1, size=(3, 3, 32, 32)).astype(np.float32)
    read_png(plots.plot_predictions(colour, labels[:3], probs[:3], names, tmp_path / "rgb.png",
                                    k=3))
    # k larger than the number of classes shows every class.
    read_png(plots.plot_predictions(colour[:1], [1], probs[:1, :2] / probs[:1, :2].sum(),
                                    ["cat", "dog"], tmp_path / "two.png", k=5), min_width=150)


def test_plot_predictions_errors(tmp_path):
    x = np.zeros((2, 1, 8, 8))
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="2 labels"):
        plots.plot_predictions(x, [0], p, ["a", "b", "c"], tmp_path / "p.png")
    with pytest.raises(ValueError, match="class_names has 2"):
        plots.plot_predictions(x, [0, 1], p, ["a", "b"], tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        plots.plot_predictions(x, [0, 3], p, ["a", "b", "c"], tmp_path / "p.png")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plots.plot_predictions(np.zeros((2, 2, 8, 8)), [0, 1], p, ["a", "b", "c"], tmp_path / "p.png")
