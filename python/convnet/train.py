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
        skipped = f"  ({e['skipped_note']})" if e.get("skipped_note") else ""
        self._write(f"test at epoch {e['epoch_float']:.2f}: cost {e['cost']:.4f}  "
                    f"top-1 error {e['top1_error']:.4f}  top-5 error {e['top5_error']:.4f}{dropped}{skipped}")

    def on_epoch(self, e: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        test = e["test"]
        # Unreadable examples (skipped, replaced by the next readable one) are said next to the
        # numbers they change.
        test_note = f"; {test['skipped_note']}" if test and test["skipped_note"] else ""
        train_note = f" ({e['train']['skipped_note']})" if e["train"]["skipped_note"] else ""
        tested = (f"  test error {test['top1_error']:.4f} (accuracy {1 - test['top1_error']:.4f}{test_note})"
                  if test else "")
        self._write(f"epoch {e['epoch']} done in {e['epoch_s']:.0f} s: train cost {e['train']['cost']:.4f}  "
                    f"train error {e['train']['top1_error']:.4f}{train_note}{tested}")


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
    apply to every solver. Recorded in run_info. Options left as None take the engine's defaults
    (those of `convnet train --help`: 10 epochs, tests at each epoch's end, 3 checkpoints kept).
    """

    def __init__(self, net: Net, train: _data.Pipeline, test: _data.Pipeline | None = None, *,
                 epochs: int | None = None, schedule="constant", test_every: int | None = None,
                 test_batches: int | None = None, save_dir: str | None = None, save_every: int | None = None,
                 keep: int | None = None, log: str | None = None, max_grad_norm: float | None = None,
                 callbacks: Iterable[Callback] = (), progress: bool | str = True,
                 run_info: dict | None = None, solver: str | None = None,
                 adam_betas: Sequence[float] | None = None, adam_eps: float | None = None):
        self.net, self.train_data, self.test_data = net, train, test
        # None keeps the net's own solver (sgd for a new net), with its state.
        nets_own = solver is None and adam_betas is None and adam_eps is None
        solver_opts = net._net.solver if nets_own else solver_options(solver, adam_betas, adam_eps)
        self.save_dir = save_dir
        if log:
            os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        # Options left as None take the engine's defaults (TrainerOptions).
        given = {k: v for k, v in dict(epochs=epochs, test_every=test_every, test_batches=test_batches,
                                       save_dir=save_dir, save_every=save_every, keep=keep, log_path=log,
                                       max_grad_norm=max_grad_norm).items() if v is not None}
        self._trainer = _core.Trainer(net._net, train._pipe, test._pipe if test is not None else None,
                                      schedules=_schedules(schedule), run_info=run_info, solver=solver_opts,
                                      **given)
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
        return _run(self._trainer, self.callbacks)


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
    kept in every checkpoint so that `convnet test` and `predict` read images the same way. The
    engine's RunData does the work; options left as None take its defaults (`convnet train
    --help` lists them).

    scale: a number, or "std" (the default) for 1 / the training pixels' standard deviation, so
    that the net's input has unit variance in whatever units the pixels come (what kaiming and
    xavier inits assume; the paper's N(0, 0.01) init wants 1, raw 0-255 values)."""

    def __init__(self, spec: str | None = None, *, image_size: int | None = None, crop: int | None = None,
                 mirror: bool | None = None, pca_std: float | None = None, pca_rescale: bool | None = None,
                 mean: str | None = None, scale: float | str | None = None, stats_sample: int | None = None,
                 stats_path: str | None = None):
        o = _core.DataOptions()
        if scale is not None and not isinstance(scale, str):
            scale = repr(float(scale))
        for name, value in dict(data=spec, image_size=image_size, crop=crop, mirror=mirror, pca_std=pca_std,
                                pca_rescale=pca_rescale, mean=mean, scale=scale, stats_sample=stats_sample,
                                stats_path=stats_path).items():
            if value is not None:
                setattr(o, name, value)
        self._adopt(_core.RunData(o, _stats_progress()))

    @classmethod
    def _of_options(cls, options) -> "DataPrep":
        """From the engine's DataOptions (a JobOptions' data part)."""
        prep = cls.__new__(cls)
        prep._adopt(_core.RunData(options, _stats_progress()))
        return prep

    @classmethod
    def of_run(cls, run: dict, spec: str | None = None) -> "DataPrep":
        """The data a checkpoint's run trained on (its run_info), read the way it read them
        (crop, mean, scale and mean value as trained), or the data set `spec` read that way."""
        prep = cls.__new__(cls)
        prep._adopt(_core.RunData.of_run(run, spec or ""))
        return prep

    def _adopt(self, run_data) -> None:
        self._data = run_data
        o = run_data.options
        self.spec, self.image_size, self.crop, self.mirror = o.data, o.image_size, o.crop, o.mirror
        self.pca_std, self.pca_rescale, self.mean = o.pca_std, o.pca_rescale, o.mean
        self.train_source, self.test_source = run_data.train_source, run_data.test_source
        self.description = run_data.description
        self.stats, self.mean_value, self.scale = run_data.stats, run_data.mean_value, run_data.scale

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, size, size) of the images the net sees."""
        size = self._data.input_size
        return self._data.channels, size, size

    @property
    def classes(self) -> int:
        return self._data.classes

    def pipelines(self, batch: int, seed: int = 1, workers: int = 2, pinned: bool = False):
        """The training and test pipelines; `pinned` for a net whose input is on a GPU."""
        return tuple(_data.Pipeline._of_core(self._data.pipeline(train, batch, seed, workers, pinned),
                                             self.train_source if train else self.test_source)
                     for train in (True, False))

    def info(self) -> dict:
        return self._data.info()


def _stats_progress():
    """The statistics' progress line, from rank 0 alone in an MPI run."""
    return _data.stats_progress() if _core.world_rank() == 0 else None


def _job_args(**options) -> list[tuple[str, str]]:
    """keyword=value pairs as the commands' (--name, value) pairs: None is left out (the job's
    default), True/False are flags, lists repeat the option."""
    pairs = []
    for key, value in options.items():
        if value is None:
            continue
        name = key.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            pairs.append((name, ("1" if v else "0") if isinstance(v, bool) else str(v)))
    return pairs


def prepare_job(model: Model | str, data: DataPrep, options) -> tuple[object, Net]:
    """The run prepared by the engine (its Job: net, pipelines, trainer, run folder, resume) for
    a model, the data and the job's options (_core.JobOptions); returns (job, net). Lines about
    schedules changed since a resumed checkpoint go to stderr."""
    text = model.to_json() if isinstance(model, Model) else str(model)
    job = _core.Job(text, data._data, options)
    for note in job.resume_notes:
        print(f"resume: {note}", file=sys.stderr, flush=True)
    net = Net._of_core(job.net)  # keeps the job (its owner) alive
    return job, net


def _run(trainer, cbs: list) -> dict:
    """Runs an engine trainer (or job) with Python callbacks; closes progress bars either way."""
    def on_batch(e):
        return all([cb.on_batch(e) is not False for cb in cbs])

    def on_test(e):
        for cb in cbs:
            cb.on_test(e)

    def on_epoch(e):
        return all([cb.on_epoch(e) is not False for cb in cbs])

    trainer.set_callbacks(on_batch, on_test, on_epoch)
    try:
        return trainer.run()
    finally:
        for cb in cbs:
            if isinstance(cb, ProgressBar) and cb.bar is not None:
                cb.bar.close()
                cb.bar = None


def train(model: Model | str, data: str | DataPrep = "fashion-mnist", *, epochs: int | None = None,
          batch: int | None = None, devices: str | Sequence[str] | None = None, seed: int | None = None,
          math: str | None = None, schedule=None, test_every: int | None = None, save_dir: str | None = None,
          keep: int | None = None, log: str | None = None, resume: bool | str = False, overwrite: bool = False,
          callbacks: Iterable[Callback] = (), progress: bool | str = True, max_grad_norm: float | None = None,
          workers: int | None = None, cuda_graph: bool = False, solver: str | None = None,
          adam_betas: Sequence[float] | None = None, adam_eps: float | None = None):
    """Builds the net, prepares the data (data set by name, scalar mean subtraction and unit
    variance by default: DataPrep) and trains: the engine's Job, as `convnet train` and
    `convnet-train` run it, so the options and their defaults are theirs (None: the default;
    `convnet train --help` lists them). Returns (net, result).

    schedule: one schedule for every layer, or {layer-name prefix: schedule} with "*" for the
    rest. resume=True continues from the newest checkpoint in save_dir when there is one; a path
    resumes from that checkpoint (file or folder). A save_dir holding another run's checkpoints
    is an error unless resume or overwrite. solver: "sgd" (default), "nesterov" or "adamw"
    (adam_betas, adam_eps); a resume needs the checkpoint's solver."""
    solver_options(solver, adam_betas, adam_eps)  # a bad solver fails before any work
    prep = data if isinstance(data, DataPrep) else DataPrep(data)
    if resume is True and not save_dir:
        raise ValueError("resume=True needs save_dir (or give the checkpoint's path)")
    if isinstance(resume, str) and not os.path.exists(resume):
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {resume}")
    groups, everything = [], schedule
    if schedule is not None and not isinstance(schedule, str):
        items = _schedules(schedule)
        groups = [f"{g}={t}" for g, t in items if g != "*"]
        everything = dict(items).get("*")
    if devices is not None and not isinstance(devices, str):
        devices = ",".join(devices)
    betas = None if adam_betas is None else ",".join(repr(float(b)) for b in adam_betas)
    args = _job_args(epochs=epochs, batch=batch, device=devices, seed=seed, math=math, schedule=everything,
                     group=groups, test_every=test_every, save_dir=save_dir, keep=keep, log=log,
                     resume="auto" if resume is True else (resume or None), overwrite=overwrite or None,
                     max_grad_norm=max_grad_norm, workers=workers, cuda_graph=cuda_graph or None, solver=solver,
                     adam_betas=betas, adam_eps=None if adam_eps is None else repr(float(adam_eps)))
    # Pipelines and the run info come from the job; the data options are the DataPrep's.
    # In an MPI run, rank 0 alone shows progress.
    shown = progress and _core.world_rank() == 0
    cbs = list(callbacks) + ([ProgressBar(batches=progress != "epochs")] if shown else [])
    job, net = prepare_job(model, prep, _core.JobOptions(args))
    if shown and job.resumed_from:
        print(f"resuming from {job.resumed_from}", file=sys.stderr)
    start = time.time()
    result = _run(job, cbs)
    result["wall_s"] = time.time() - start
    return net, result
