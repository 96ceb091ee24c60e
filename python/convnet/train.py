"""Training from Python: the C++ trainer (schedules, tests, checkpoints, JSON-lines log, divergence
watch) with Python callbacks and a progress bar.

    net = convnet.Net(convnet.zoo.fashion_alexnet())
    trainer = convnet.Trainer(net, train_pipe, test_pipe, epochs=10,
                              schedule="plateau[patience=2]", save_dir="runs/a", log="runs/a/log.jsonl")
    result = trainer.run()          # {'epochs_done', 'step', 'train', 'test', 'last_checkpoint', ...}

or, with data sets by name and the data preparation done for you:

    net, result = convnet.train(convnet.zoo.fashion_alexnet(), data="fashion-mnist", epochs=10)

Callbacks are objects with any of on_batch(event), on_test(event), on_epoch(event); returning
False from on_batch or on_epoch stops the run after a checkpoint, to be resumed later.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import _core
from . import data as _data
from .model import Model
from .net import Net, solver_options

DivergenceError = _core.DivergenceError
Schedule = _core.Schedule


class Callback:
    """Base class for training callbacks: override what you need. Events are dicts."""

    def on_batch(self, event: dict) -> bool | None:
        return None

    def on_test(self, event: dict) -> None:
        return None

    def on_epoch(self, event: dict) -> bool | None:
        return None


class ProgressBar(Callback):
    """One bar per epoch with cost, error and images/s (tqdm when importable and writing to a
    terminal; otherwise a line every `every` batches), and a line per test and per epoch.
    batches=False keeps only the test and epoch lines."""

    def __init__(self, every: int = 50, file=None, batches: bool = True):
        self.every, self.file, self.batches = every, file or sys.stderr, batches
        self.bar = None
        try:
            import tqdm  # noqa: F401
            self._tqdm = self.file.isatty()
        except ImportError:
            self._tqdm = False

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def on_batch(self, e: dict) -> None:
        if not self.batches:
            return
        text = (f"cost {e['cost']:.4f}  error {e['top1_error']:.3f}  lr {e['lr']:.2g}  "
                f"{e['images_per_s']:.0f} img/s")
        if self._tqdm:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=e["batches"], initial=e["batch"] - 1, desc=f"epoch {e['epoch']}",
                                file=self.file, leave=False, dynamic_ncols=True)
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif e["batch"] % self.every == 0 or e["batch"] == e["batches"]:
            self._write(f"epoch {e['epoch']}  batch {e['batch']}/{e['batches']}  {text}")

    def on_test(self, e: dict) -> None:
        dropped = "  (learning rate lowered)" if e["lr_dropped"] else ""
        self._write(f"test at epoch {e['epoch_float']:.2f}: cost {e['cost']:.4f}  "
                    f"top-1 error {e['top1_error']:.4f}  top-5 error {e['top5_error']:.4f}{dropped}")

    def on_epoch(self, e: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        test = e["test"]
        tested = f"  test error {test['top1_error']:.4f} (accuracy {1 - test['top1_error']:.4f})" if test else ""
        self._write(f"epoch {e['epoch']} done in {e['epoch_s']:.0f} s: train cost {e['train']['cost']:.4f}  "
                    f"train error {e['train']['top1_error']:.4f}{tested}")


def _schedules(schedule: str | Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(schedule, str):
        return [("*", schedule)]
    items = list(schedule.items()) if isinstance(schedule, Mapping) else list(schedule)
    for group, text in items:
        Schedule(text)  # raises ValueError naming a bad schedule now, not at run()
    return [(str(g), str(t)) for g, t in items]


class Trainer:
    """The engine's training loop (C++) on a Net and data Pipelines.

    schedule: one schedule for every layer ("plateau[patience=2]"), or per layer group, a dict
    {layer-name prefix: schedule} where "*" matches the rest (first match wins). See
    convnet.Schedule for the forms: constant, step, exp, dexp, linear, plateau (+ warmup).
    solver: "sgd" (the paper's momentum SGD), "nesterov" or "adamw" (adam_betas, default
    (0.9, 0.999); adam_eps, default 1e-8); None keeps the net's (Net.set_solver; sgd for a new
    net). Each layer's rates, momentum and weight decay (epsW, momW, wc, ...) and the schedules
    apply to every solver. Recorded in run_info.
    """

    def __init__(self, net: Net, train: _data.Pipeline, test: _data.Pipeline | None = None, *,
                 epochs: int = 10, schedule="constant", test_every: int = 0, test_batches: int = 0,
                 save_dir: str | None = None, save_every: int = 0, keep: int = 3, log: str | None = None,
                 max_grad_norm: float = 0.0, callbacks: Iterable[Callback] = (), progress: bool | str = True,
                 run_info: dict | None = None, solver: str | None = None,
                 adam_betas: Sequence[float] | None = None, adam_eps: float | None = None):
        self.net, self.train_data, self.test_data = net, train, test
        # None keeps the net's own solver (sgd for a new net), with its state.
        nets_own = solver is None and adam_betas is None and adam_eps is None
        solver_opts = net._net.solver if nets_own else solver_options(solver, adam_betas, adam_eps)
        self.save_dir = save_dir
        if log:
            os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        self._trainer = _core.Trainer(net._net, train._pipe, test._pipe if test is not None else None,
                                      epochs, test_every, test_batches, _schedules(schedule),
                                      save_dir or "", save_every, keep, log or "", max_grad_norm,
                                      run_info, solver_opts)
        # progress: True, a bar (or lines) per batch and a line per test and epoch; "epochs", only
        # the test and epoch lines; False, nothing.
        self.callbacks = list(callbacks) + ([ProgressBar(batches=progress != "epochs")] if progress else [])

    def resume(self, checkpoint: str | None = None) -> list[str]:
        """Continues from a checkpoint file, or the newest in a folder (default: save_dir).
        Returns, and prints to stderr, a line for each schedule that changed since the checkpoint
        (a plateau keeps its record; any other change starts the new schedule afresh)."""
        path = checkpoint or self.save_dir
        if not path:
            raise ValueError("resume needs a checkpoint file or folder (or a Trainer with save_dir)")
        notes = list(self._trainer.resume(path))
        for note in notes:
            print(f"resume: {note}", file=sys.stderr, flush=True)
        return notes

    def run(self) -> dict:
        """Trains; returns the last epoch's train metrics, the last test's, the step, whether a
        callback stopped the run, and the last checkpoint. Raises convnet.DivergenceError (a
        FloatingPointError) when the cost or the gradients stop being finite."""
        cbs = self.callbacks

        def on_batch(e):
            return all([cb.on_batch(e) is not False for cb in cbs])

        def on_test(e):
            for cb in cbs:
                cb.on_test(e)

        def on_epoch(e):
            return all([cb.on_epoch(e) is not False for cb in cbs])

        self._trainer.set_callbacks(on_batch, on_test, on_epoch)
        try:
            return self._trainer.run()
        finally:
            for cb in cbs:
                if isinstance(cb, ProgressBar) and cb.bar is not None:
                    cb.bar.close()
                    cb.bar = None


def evaluate(net: Net, data: _data.Pipeline, max_batches: int = 0) -> dict:
    """Cost, top-1 and top-5 error of `net` over a pipeline (single view, test mode)."""
    return _core.evaluate(net._net, data._pipe, max_batches)


def evaluate_multiview(net: Net, source, *, crop: int, stats=None, mean_value: float = 0.0,
                       subtract_mean_image: bool = False, scale: float = 1.0, batch: int = 130,
                       progress: bool = False) -> dict:
    """AlexNet's 10-view test: the 4 corner and the centre crops of each image and their
    reflections; the softmax outputs of the 10 are averaged."""
    report = None
    if progress:
        def report(done, total):
            if done == total or done % 1000 < max(1, batch // 10):
                print(f"\r10-view test: {done}/{total}", end="\n" if done == total else "",
                      file=sys.stderr, flush=True)
    return _core.evaluate_multiview(net._net, source, stats if stats is not None else _data.DataStats(),
                                    crop, subtract_mean_image, mean_value, scale, batch, report)


class DataPrep:
    """How a run reads its data: a data set by name (see open_dataset) and its normalisation,
    kept in every checkpoint so that `convnet test` and `predict` read images the same way.

    scale: a number, or "std" (the default) for 1 / the training pixels' standard deviation, so
    that the net's input has unit variance in whatever units the pixels come (what kaiming and
    xavier inits assume; the paper's N(0, 0.01) init wants 1, raw 0-255 values)."""

    def __init__(self, spec: str = "fashion-mnist", *, image_size: int = 256, crop: int = 0,
                 mirror: bool = False, pca_std: float = 0.0, pca_rescale: bool = False,
                 mean: str = "scalar", scale: float | str = "std", stats_sample: int = 10000,
                 stats_path: str | None = None):
        if mean not in ("scalar", "image", "none"):
            raise ValueError(f"mean must be 'scalar', 'image' or 'none', not {mean!r}")
        self.spec, self.image_size, self.crop, self.mirror = spec, image_size, crop, mirror
        self.pca_std, self.pca_rescale, self.mean = pca_std, pca_rescale, mean
        self.train_source, self.test_source, self.description = _core.open_dataset(spec, image_size)
        self.stats = None
        if stats_path and os.path.exists(stats_path):
            self.stats = _data.load_stats(stats_path)
        elif mean != "none" or pca_std > 0 or scale == "std":
            self.stats = _data.compute_stats(self.train_source, stats_sample,
                                             progress=len(self.train_source) > 20000)
            if stats_path:
                self.stats.save(stats_path)
        self.mean_value = float(np.mean(self.stats.mean)) if mean == "scalar" else 0.0
        # The number the pipelines multiply by (what a checkpoint records).
        self.scale = _core.parse_scale(scale if isinstance(scale, str) else repr(float(scale)),
                                       self.stats or _data.DataStats())

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, size, size) of the images the net sees."""
        s = self.train_source
        size = self.crop or min(s.height, s.width)
        return s.channels, size, size

    @property
    def classes(self) -> int:
        return self.train_source.classes

    def pipelines(self, batch: int, seed: int = 1, workers: int = 2, pinned: bool = False):
        """The training and test pipelines; `pinned` for a net whose input is on a GPU."""
        common = dict(batch=batch, seed=seed, workers=workers, crop=self.crop, scale=self.scale,
                      mean_value=self.mean_value, subtract_mean_image=self.mean == "image",
                      stats=self.stats, pinned=pinned)
        train = _data.Pipeline(self.train_source, shuffle=True, train=True, mirror=self.mirror,
                               pca_std=self.pca_std, pca_rescale=self.pca_rescale, **common)
        test = _data.Pipeline(self.test_source, shuffle=False, train=False, **common)
        return train, test

    def info(self) -> dict:
        names = list(self.train_source.class_names())
        if not names and self.spec == "fashion-mnist":  # IDX files carry no class names
            from .datasets import FASHION_MNIST_CLASSES
            names = list(FASHION_MNIST_CLASSES)
        s = self.train_source
        return dict(data=self.spec, image_size=self.image_size, source_size=s.height if s.height == s.width else None,
                    crop=self.crop, mean=self.mean,
                    mean_value=self.mean_value, scale=self.scale, mirror=self.mirror,
                    pca_std=self.pca_std, pca_rescale=self.pca_rescale, class_names=names)


def train(model: Model | str, data: str | DataPrep = "fashion-mnist", *, epochs: int = 10,
          batch: int = 128, devices="cpu", seed: int = 1, math: str = "fp32",
          schedule="constant", test_every: int = 0, save_dir: str | None = None, keep: int = 3,
          log: str | None = None, resume: bool | str = False, callbacks: Iterable[Callback] = (),
          progress: bool | str = True, max_grad_norm: float = 0.0, workers: int = 2,
          cuda_graph: bool = False, solver: str | None = None,
          adam_betas: Sequence[float] | None = None, adam_eps: float | None = None):
    """Builds the net, prepares the data (data set by name, scalar mean subtraction and unit
    variance by default: DataPrep) and trains. Returns (net, result). resume=True continues from the newest
    checkpoint in save_dir when there is one; a path resumes from that checkpoint. solver: "sgd"
    (default), "nesterov" or "adamw" (adam_betas, adam_eps), as Trainer; a resume needs the
    checkpoint's solver."""
    solver_options(solver, adam_betas, adam_eps)  # a bad solver fails before any work
    prep = data if isinstance(data, DataPrep) else DataPrep(data)
    checkpoint = None
    if resume:
        path = resume if isinstance(resume, str) else save_dir
        if path and os.path.isdir(path):
            checkpoint = _core.latest_checkpoint(path) or None
        elif path and os.path.isfile(path):
            checkpoint = path
        if checkpoint is None and isinstance(resume, str):
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {resume}")
    if checkpoint:
        # The run's seed keys the data order and the dropout masks: a resumed run keeps it.
        seed = _core.read_checkpoint_meta(checkpoint)["seed"]
    net = Net(model, devices=devices, seed=seed, math=math, cuda_graph=cuda_graph)
    # Batches for a GPU input are filled in page-locked memory and go up without a staging copy.
    pinned = any(l["device"].startswith("cuda") for l in net._net.layers()
                 if l["role"] in ("input", "labels"))
    train_pipe, test_pipe = prep.pipelines(batch, seed=seed, workers=workers, pinned=pinned)
    if log is None and save_dir:
        log = os.path.join(save_dir, "log.jsonl")
    trainer = Trainer(net, train_pipe, test_pipe, epochs=epochs, schedule=schedule,
                      test_every=test_every, save_dir=save_dir, keep=keep, log=log,
                      max_grad_norm=max_grad_norm, callbacks=callbacks, progress=progress,
                      run_info=dict(prep.info(), batch=batch, seed=seed), solver=solver,
                      adam_betas=adam_betas, adam_eps=adam_eps)
    if checkpoint:
        trainer.resume(checkpoint)
        if progress:
            print(f"resuming from {checkpoint}", file=sys.stderr)
    start = time.time()
    result = trainer.run()
    result["wall_s"] = time.time() - start
    return net, result
