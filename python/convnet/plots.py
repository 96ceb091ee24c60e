"""Pictures of training: learning curves from the trainer's log, first-layer filters (as
cuda-convnet's shownet), and test images with their top-k predictions (the AlexNet paper's
figure 4). Every function writes a PNG and returns its path.

matplotlib is imported only when a function runs, and draws with Agg (no display needed) on its
own Figure, so the global pyplot state and backend are left alone.

The training log is JSON lines, one event per line::

    {"event": "batch", "epoch": 1, "batch": 50, "step": 50, "epoch_float": 0.107, "cost": 1.23,
     "top1_error": 0.41, "top5_error": 0.02, "lr": 0.01, "elapsed_s": 12.3, "images_per_s": 520.0}
    {"event": "test", "epoch": 1, "batch": 469, "step": 469, "epoch_float": 1.0, "cost": 0.5,
     "top1_error": 0.18, "top5_error": 0.003, "elapsed_s": 140.0}
    {"event": "epoch", "epoch": 1, "step": 469, "train_cost": 0.7, "train_top1_error": 0.25, ...,
     "test_cost": 0.5, "test_top1_error": 0.18, ..., "lr": 0.01, "elapsed_s": 140.0}
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Sequence

import numpy as np


def _figure(width: float, height: float):
    """A matplotlib Figure drawn by Agg, or an ImportError saying how to get matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("convnet.plots needs matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png) -> str:
    path = os.fspath(out_png)
    fig.savefig(path, format="png")
    return path


# ---- learning curves ----
def read_log(log_path) -> list[dict]:
    """The events of a JSON-lines training log, in order. Blank lines are ignored; a line that is
    not a JSON object (a log cut off mid-write) is skipped with a warning naming it.
    FileNotFoundError if the file is missing; ValueError if it holds no events."""
    path = os.fspath(log_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training log '{path}' does not exist")
    events = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as e:
                warnings.warn(f"{path}:{number}: skipped a line that is not JSON ({e.msg})",
                              stacklevel=2)
                continue
            if not isinstance(event, dict) or "event" not in event:
                warnings.warn(f"{path}:{number}: skipped a line that is not an event object",
                              stacklevel=2)
                continue
            events.append(event)
    if not events:
        raise ValueError(f"training log '{path}' has no events")
    return events


def smooth(values: Sequence[float], window: int | None = None) -> np.ndarray:
    """Trailing running mean; the first points average what there is so far. The default window
    is a twentieth of the points (1 to 100), so a curve keeps its shape at any log length."""
    v = np.asarray(values, dtype=float)
    if window is None:
        window = int(np.clip(len(v) // 20, 1, 100))
    sums = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def _series(events: list[dict], kind: str, x_key: str, y_key: str):
    """(x, y) arrays of the events of one kind that hold finite numbers for both keys."""
    xs, ys = [], []
    for e in events:
        if e.get("event") != kind:
            continue
        x, y = e.get(x_key), e.get(y_key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
    return np.array(xs), np.array(ys)


def plot_curves(log_path, out_png) -> str:
    """Three panels against epochs (epoch_float): cost (training batches, raw and smoothed, and
    the test points), top-1 error (the same), and the learning rate on a log axis. Where the log
    has no batch or test events, the epoch events' train_* / test_* values are drawn at the end
    of their epoch instead."""
    events = read_log(log_path)
    fig = _figure(7, 9)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, key, title in ((axes[0], "cost", "cost"), (axes[1], "top1_error", "top-1 error")):
        bx, by = _series(events, "batch", "epoch_float", key)
        if len(bx) == 0:
            bx, by = _series(events, "epoch", "epoch", "train_" + key)
        if len(bx):
            ax.plot(bx, by, color="tab:blue", alpha=0.25, linewidth=0.8)
            ax.plot(bx, smooth(by), color="tab:blue", label="train (smoothed)")
        tx, ty = _series(events, "test", "epoch_float", key)
        if len(tx) == 0:
            tx, ty = _series(events, "epoch", "epoch", "test_" + key)
        if len(tx):
            ax.plot(tx, ty, "o-", color="tab:red", label="test")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="upper right")
        else:
            ax.text(0.5, 0.5, f"no {title} in the log", ha="center", va="center",
                    transform=ax.transAxes)
    lx, ly = _series(events, "batch", "epoch_float", "lr")
    if len(lx) == 0:
        lx, ly = _series(events, "epoch", "epoch", "lr")
    positive = ly > 0  # a log axis cannot show 0
    if positive.any():
        axes[2].plot(lx[positive], ly[positive], color="tab:green")
        axes[2].set_yscale("log")
    else:
        axes[2].text(0.5, 0.5, "no learning rate in the log", ha="center", va="center",
                     transform=axes[2].transAxes)
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3, which="both")
    fig.suptitle(os.path.basename(os.fspath(log_path)))
    fig.tight_layout()
    return _save(fig, out_png)


# ---- filters ----
def _unit(a: np.ndarray) -> np.ndarray:
    """a scaled to [0, 1]; a constant array becomes 0.5 (nothing to show, but not black)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full(a.shape, 0.5) if hi == lo else (a - lo) / (hi - lo)


def filter_grid(weights: np.ndarray, channels_as_rgb: bool | None = None, columns: int | None = None,
                gap: int = 1) -> np.ndarray:
    """One tower's conv filters (F x C x K x K, as Net.get_param("conv1.weights")) tiled into an
    image, each filter scaled to [0, 1] on its own, ``gap`` pixels of white between tiles.

    RGB (H x W x 3) when the filters are shown as colour (``channels_as_rgb``, by default when
    C == 3); otherwise grey (H x W) with each of a filter's C channels as its own tile, side by
    side. ``columns`` is filters per row (by default a near-square grid)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"filter weights must be F x C x K x K (conv weights), got shape {w.shape}")
    f, c, k, _ = w.shape
    rgb = (c == 3) if channels_as_rgb is None else bool(channels_as_rgb)
    if rgb and c != 3:
        raise ValueError(f"channels_as_rgb needs 3 input channels, the filters have {c}")
    columns = columns or math.ceil(math.sqrt(f))
    rows = math.ceil(f / columns)
    per_filter = 1 if rgb else c  # grey filters show each channel as a tile
    step = k + gap
    grid = np.ones((rows * step + gap, columns * per_filter * step + gap) + ((3,) if rgb else ()))
    for i in range(f):
        tile = _unit(w[i])  # all of a filter's channels share its scale
        y = gap + (i // columns) * step
        for j in range(per_filter):
            x = gap + ((i % columns) * per_filter + j) * step
            grid[y:y + k, x:x + k] = tile.transpose(1, 2, 0) if rgb else tile[j]
    return grid


def plot_filters(weights, out_png, channels_as_rgb: bool | None = None) -> str:
    """First-layer filters as image grids: ``weights`` is an F x C x K x K array, or a list of
    them (one per tower, e.g. conv1a and conv1b of alexnet_2012), drawn side by side. Each filter
    is scaled to [0, 1] separately; colour when C == 3 (or ``channels_as_rgb``), grey otherwise."""
    towers = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if not towers:
        raise ValueError("plot_filters: no filter weights given")
    grids = [filter_grid(w, channels_as_rgb) for w in towers]
    height = max(g.shape[0] for g in grids)
    width = sum(g.shape[1] for g in grids)
    scale = max(4.0 / height, 0.06)  # inches per pixel: small grids drawn large enough to see
    fig = _figure(max(3.0, width * scale + 0.4 * len(grids)), max(3.0, height * scale + 0.6))
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for t, (ax, grid, w) in enumerate(zip(axes, grids, towers)):
        ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        shape = "x".join(str(d) for d in np.shape(w))
        ax.set_title(f"tower {t}: {shape}" if len(grids) > 1 else shape, fontsize=9)
    fig.tight_layout()
    return _save(fig, out_png)


# ---- predictions ----
def _display_image(image: np.ndarray) -> np.ndarray:
    """C x H x W in any range -> H x W (grey) or H x W x 3 in [0, 1] for imshow."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"images must be N x C x H x W with C = 1 or 3, got an image of shape "
                         f"{image.shape}")
    unit = _unit(image.astype(float))
    return unit[0] if unit.shape[0] == 1 else unit.transpose(1, 2, 0)


def plot_predictions(images, labels, probs, class_names: Sequence[str], out_png, k: int = 5,
                     columns: int = 4) -> str:
    """A grid of test images (N x C x H x W, any range: each scaled to [0, 1] for display), each
    above a bar chart of its top-k predicted classes and their probabilities; the true class is
    named under the image, and its bar, when it is in the top k, drawn in red (the AlexNet
    paper's figure 4)."""
    images, labels, probs = np.asarray(images), np.asarray(labels).reshape(-1), np.asarray(probs)
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {images.shape}")
    n = len(images)
    if n == 0:
        raise ValueError("plot_predictions: no images given")
    if len(labels) != n or probs.ndim != 2 or len(probs) != n:
        raise ValueError(f"{n} images need {n} labels and {n} rows of probabilities, got labels "
                         f"{labels.shape} and probs {probs.shape}")
    classes = probs.shape[1]
    if len(class_names) != classes:
        raise ValueError(f"probs has {classes} classes but class_names has {len(class_names)}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}), got {labels.min()}..{labels.max()}")
    k = max(1, min(k, classes))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = _figure(2.6 * columns, (2.4 + 0.22 * k) * rows)
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[2.0, 0.25 * k + 0.4] * rows)
    for i in range(n):
        r, c = divmod(i, columns)
        ax = fig.add_subplot(grid[2 * r, c])
        picture = _display_image(images[i])
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(str(class_names[labels[i]]), fontsize=9)
        top = np.argsort(-probs[i], kind="stable")[:k]
        bars = fig.add_subplot(grid[2 * r + 1, c])
        colours = ["tab:red" if j == labels[i] else "tab:blue" for j in top]
        bars.barh(range(k), probs[i, top], color=colours)
        bars.set_yticks(range(k), [str(class_names[j]) for j in top], fontsize=8)
        bars.invert_yaxis()  # most likely class on top
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return _save(fig, out_png)
