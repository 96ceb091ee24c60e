"""Data sources and the prefetching pipeline (C++ worker threads; Python only iterates).

    src = data.fashion_mnist_source(train=True)            # or folder_source(root), ...
    pipe = data.Pipeline(src, batch=128, seed=1, workers=2)
    for batch in pipe.epoch():                             # batches of CHWN tensors
        net.train_batch(batch)                             # no NCHW conversion on the way

Augmentation follows the AlexNet paper: random crops and reflections, PCA colour noise
(``pca_std=0.1`` with statistics from ``compute_stats``: alpha_i ~ N(0, pca_std) times the
standard deviation along each colour principal component, as cuda-convnet2; ``pca_rescale`` adds
its 1/(1 + pca_std) shrink of training inputs), mean subtraction and ``scale`` (for unit variance:
``_core.parse_scale("std", stats)``); at test time the centre crop, or ``ten_views`` (4 corners
+ centre, each with its reflection).
"""

from __future__ import annotations

import os
import sys
import time

from . import _core
from .datasets import FASHION_MNIST_DIR

DataError = _core.DataError
DataSource = _core.DataSource
DataStats = _core.DataStats
idx_source = _core.idx_source
folder_source = _core.folder_source
image_files_source = _core.image_files_source
generated_source = _core.generated_source
array_source = _core.array_source
load_stats = _core.load_stats
ten_views = _core.ten_views


def fashion_mnist_source(train: bool = True, root: str = FASHION_MNIST_DIR) -> DataSource:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX files, gzip)."""
    prefix = "train" if train else "t10k"
    return idx_source(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"),
                      os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))


def stats_progress(quiet_below_s: float = 2.0):
    """A progress(done, total) reporter for the data statistics, on stderr: a terminal gets one
    line redrawn twice a second, a log file whole lines every 10 s; nothing when they take less
    than `quiet_below_s` seconds."""
    start = time.time()
    last = [start]
    tty = sys.stderr.isatty()
    every = 0.5 if tty else 10.0
    shown = [False]

    def report(done, total):
        now = time.time()
        if done < total and (now - last[0] < every or now - start < quiet_below_s):
            return
        if done == total and not shown[0] and now - start < quiet_below_s:
            return
        last[0], shown[0] = now, True
        rate = done / max(now - start, 1e-9)
        line = f"data statistics: {done}/{total} images ({rate:.0f} images/s)"
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return report


def compute_stats(source: DataSource, sample: int = 0, progress: bool = True) -> DataStats:
    """Mean image and RGB principal components over `sample` examples (all when 0), with a
    progress line on stderr."""
    return _core.compute_stats(source, sample, stats_progress(quiet_below_s=0) if progress else None)


class Pipeline:
    """Shuffles per epoch with `seed`, decodes and augments on `workers` threads into a queue of
    `prefetch` batches. Output is identical for any number of workers. `pinned` puts full-size
    batches in page-locked memory, so that a net whose input is on a GPU uploads them by DMA with
    no staging copy (needs a GPU). Options left as None take the engine's defaults
    (PipelineOptions: batch 128, seed 1, 2 workers, 4 batches prefetched, shuffled training
    batches with random horizontal reflections (mirror=False for none; `convnet train` has them
    off unless --mirror) and, when `crop` is set, random crops; no colour noise, scale 1).
    VGG's scale jittering: scale_jitter=(min, max) with crop <= min rescales each training image
    so its shorter side is S in [min, max] before the random crop; test_scale=Q does the same at
    Q for a test pipeline (then the centre crop)."""

    def __init__(self, source: DataSource, batch: int | None = None, *, shuffle: bool | None = None,
                 train: bool | None = None, drop_last: bool | None = None, seed: int | None = None,
                 workers: int | None = None, prefetch: int | None = None, crop: int | None = None,
                 random_crop: bool | None = None, mirror: bool | None = None, pca_std: float | None = None,
                 pca_rescale: bool | None = None, subtract_mean_image: bool | None = None,
                 mean_value: float | None = None, scale: float | None = None, stats: DataStats | None = None,
                 pinned: bool | None = None, scale_jitter: tuple[int, int] | None = None,
                 test_scale: int | None = None):
        jitter_min = jitter_max = None
        if scale_jitter is not None:
            if len(scale_jitter) != 2:
                raise ValueError(f"scale_jitter must be (min, max), got {scale_jitter!r}")
            jitter_min, jitter_max = (int(v) for v in scale_jitter)
        given = {k: v for k, v in dict(batch=batch, shuffle=shuffle, train=train, drop_last=drop_last, seed=seed,
                                       workers=workers, prefetch=prefetch, crop=crop, random_crop=random_crop,
                                       mirror=mirror, pca_std=pca_std, pca_rescale=pca_rescale,
                                       subtract_mean_image=subtract_mean_image, mean_value=mean_value,
                                       scale=scale, stats=stats, pinned=pinned, jitter_min=jitter_min,
                                       jitter_max=jitter_max, test_scale=test_scale).items() if v is not None}
        for name in ("batch", "workers", "prefetch"):
            if name in given and given[name] < 1:
                raise ValueError(f"{name} must be >= 1, got {given[name]}")
        self.source = source
        self._pipe = _core.Pipeline(source, **given)

    @classmethod
    def _of_core(cls, core_pipe, source: DataSource) -> "Pipeline":
        """A Pipeline around an engine pipeline built elsewhere (RunData, a Job)."""
        pipe = cls.__new__(cls)
        pipe.source, pipe._pipe = source, core_pipe
        return pipe

    def epoch(self):
        """Iterates over the batches of the current epoch; the next call continues with the next."""
        while True:
            b = self._pipe.next()
            if b is None:
                return
            yield b

    def start_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Continue at batch `first_batch` of `epoch` (resuming a run mid-epoch): the next batch
        is bitwise the one an uninterrupted run gets there; earlier ones are not prepared."""
        self._pipe.start_epoch(epoch, first_batch)

    @property
    def batches_per_epoch(self) -> int:
        return self._pipe.batches_per_epoch

    @property
    def skipped(self) -> int:
        """Examples that failed to load (corrupt files) and were replaced, so far."""
        return self._pipe.skipped_total
