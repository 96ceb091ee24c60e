"""Small controlled comparisons of the papers' design choices (`convnet experiment NAME`).

Each experiment trains a few arms (model variants that differ in one choice) on the same subset
of Fashion-MNIST, over several seeds, with the engine's trainer; this module only orchestrates.
Into its output folder it writes

- config.json: the experiment, the arms' models, the data and the budget (not the seeds);
- results.jsonl: one record per finished (arm, seed), appended as each run ends, so that an
  interrupted experiment resumes where it stopped (finished pairs are skipped);
- table.md: mean and standard deviation over seeds per arm and metric, with the paper's claim;
- plot.png: mean training and test error per epoch per arm, with a band of +-1 std.

A folder holding results of another budget, data set or set of arms is refused (restart=True
starts afresh); more seeds than before only adds the missing runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _core, zoo
from .data import Pipeline
from .model import Model
from .net import Net
from .train import Callback, DataPrep, Trainer


@dataclass
class Budget:
    epochs: int
    train_subset: int  # training images (a fixed subset, the same for every arm and seed)
    seeds: int
    test_subset: int = 2000  # test images evaluated after each epoch
    batch: int = 128

    def key(self) -> dict:
        """What must match for results to be comparable (seeds may grow: more runs, same ones)."""
        return dict(epochs=self.epochs, train_subset=self.train_subset, test_subset=self.test_subset,
                    batch=self.batch)


@dataclass
class Experiment:
    name: str
    question: str
    claim: str  # the paper's claim, with its figure or table
    arms: Callable[[int, int, int], dict]  # (classes, channels, size) -> {arm name: Model}
    metrics: list  # names of the record fields the table summarises
    budget: Budget
    target_train_error: float | None = None  # for epochs/seconds to reach a training error
    notes: str = ""
    data: str = "fashion-mnist"


def _neurons(classes, channels, size):
    # small_convnet: the paper's figure 1 used a small four-layer net, and this one trains in
    # seconds on two cores, so the four arms fit the budget.
    return {n: zoo.small_convnet(classes=classes, channels=channels, size=size, neuron=n)
            for n in ("relu", "tanh", "logistic", "softsign")}


def _lrn_pooling(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    return {"lrn+overlap(3/2)": zoo.fashion_alexnet(**kw),
            "no-lrn+overlap(3/2)": zoo.fashion_alexnet(lrn=False, **kw),
            "lrn+pool(2/2)": zoo.fashion_alexnet(pool_size=2, pool_stride=2, **kw),
            "no-lrn+pool(2/2)": zoo.fashion_alexnet(lrn=False, pool_size=2, pool_stride=2, **kw)}


def _dropout(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    return {"dropout-0.5": zoo.fashion_alexnet(dropout=0.5, **kw),
            "no-dropout": zoo.fashion_alexnet(dropout=0.0, **kw)}


EXPERIMENTS = {e.name: e for e in [
    Experiment(
        name="neurons",
        question="How much faster do ReLU units train than saturating ones (tanh, logistic, softsign)?",
        claim="AlexNet (Krizhevsky et al. 2012), figure 1: a four-layer convolutional net with ReLUs "
              "reaches 25% training error on CIFAR-10 six times faster than the same net with tanh units.",
        arms=_neurons,
        metrics=["epochs_to_target", "seconds_to_target", "train_error", "test_error", "seconds"],
        budget=Budget(epochs=10, train_subset=10000, seeds=3),
        target_train_error=0.15,
        notes="Fashion-MNIST is an easier problem than CIFAR-10, so the target training error is 15%, not 25%. "
              "Epochs to the target are interpolated between epoch ends; a run that never reaches "
              "it counts as not reached (shown as n/N reached)."),
    Experiment(
        name="lrn-pooling",
        question="What do local response normalisation and overlapping pooling (3/2 vs 2/2) each add?",
        claim="AlexNet (Krizhevsky et al. 2012), sections 3.3 and 3.4: response normalisation lowers the "
              "top-1/top-5 error rates by 1.4/1.2 points, overlapping pooling (z=3, s=2 instead of "
              "z=2, s=2) by 0.4/0.3 points, and nets with overlapping pooling overfit slightly less.",
        arms=_lrn_pooling,
        metrics=["test_error", "train_error", "gap", "seconds"],
        budget=Budget(epochs=6, train_subset=4000, seeds=3),
        notes="fashion_alexnet with its LRN layers removed and/or its pooling 2/2. gap = test error "
              "minus training error (the training error is the epoch's running error with dropout on)."),
    Experiment(
        name="dropout",
        question="What does dropout in the fully connected layers do to test error and to the time to converge?",
        claim="AlexNet (Krizhevsky et al. 2012), section 4.2: without dropout the net overfits "
              "substantially; dropout roughly doubles the number of iterations required to converge.",
        arms=_dropout,
        metrics=["test_error", "train_error", "gap", "best_epoch", "seconds"],
        budget=Budget(epochs=10, train_subset=4000, seeds=3),
        notes="fashion_alexnet with dropout 0.5 on its hidden fc layer, or none. best_epoch is the "
              "epoch of the lowest test error (a proxy for the time to converge)."),
]}


def describe_known() -> str:
    return ", ".join(EXPERIMENTS)


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {describe_known()}")
    return EXPERIMENTS[name]


# ---- data ----
def _subset_source(source, count: int, classes: int, what: str):
    """The first `count` examples of a fixed permutation (seed 0) of `source`, as an array source:
    the same images for every arm and seed, so that arms differ only in the model."""
    n = len(source)
    if count <= 0:
        raise ValueError(f"{what} subset must be >= 1, got {count}")
    if count > n:
        raise ValueError(f"{what} subset {count} is larger than the {what} set ({n} images)")
    order = np.random.default_rng(0).permutation(n)[:count]
    first = source.load(int(order[0]))[0]
    images = np.empty((count,) + first.shape, np.float32)
    labels = np.empty(count, np.int32)
    for i, k in enumerate(order):
        images[i], labels[i] = source.load(int(k))
    return _core.array_source(images, labels, classes)


class _Recorder(Callback):
    """The per-epoch curve, and a progress line per epoch."""

    def __init__(self, label: str, out):
        self.label, self.out, self.curve, self.start = label, out, [], time.time()

    def on_epoch(self, e):
        test = e["test"]
        point = dict(epoch=e["epoch"], train_error=e["train"]["top1_error"], train_cost=e["train"]["cost"],
                     test_error=test["top1_error"] if test else None, seconds=time.time() - self.start)
        self.curve.append(point)
        if self.out:
            tested = f"  test error {point['test_error']:.4f}" if test else ""
            print(f"  {self.label} epoch {point['epoch']}: train error {point['train_error']:.4f}{tested}  "
                  f"({point['seconds']:.1f} s)", file=self.out, flush=True)


def _to_target(curve: list, target: float):
    """(epochs, seconds) at which the training error (each epoch's mean) first reaches `target`,
    interpolated linearly between epoch ends; when the first epoch already reaches it, its end
    (1 epoch, its seconds): nothing finer is measured. (None, None) if never."""
    prev_epoch, prev_s, prev_err = 0.0, 0.0, None
    for p in curve:
        err = p["train_error"]
        if err <= target:
            if prev_err is None or prev_err == err:
                return float(p["epoch"]), p["seconds"]
            f = (prev_err - target) / (prev_err - err)
            return prev_epoch + f * (p["epoch"] - prev_epoch), prev_s + f * (p["seconds"] - prev_s)
        prev_epoch, prev_s, prev_err = float(p["epoch"]), p["seconds"], err
    return None, None


def _train_one(exp: Experiment, arm: str, model: Model, seed: int, train_src, test_src, prep: DataPrep,
               budget: Budget, out) -> dict:
    net = Net(model, seed=seed)
    norm = dict(mean_value=prep.mean_value, scale=prep.scale)
    train = Pipeline(train_src, budget.batch, seed=seed, train=True, shuffle=True, **norm)
    test = Pipeline(test_src, budget.batch, train=False, shuffle=False, **norm)
    rec = _Recorder(f"{arm} seed {seed}", out)
    start = time.time()
    Trainer(net, train, test, epochs=budget.epochs, callbacks=[rec], progress=False).run()
    last = rec.curve[-1]
    record = dict(arm=arm, seed=seed, test_error=last["test_error"], train_error=last["train_error"],
                  gap=last["test_error"] - last["train_error"], seconds=time.time() - start, curve=rec.curve)
    best = min(rec.curve, key=lambda p: p["test_error"])
    record["best_epoch"], record["best_test_error"] = best["epoch"], best["test_error"]
    if exp.target_train_error is not None:
        record["target_train_error"] = exp.target_train_error
        record["epochs_to_target"], record["seconds_to_target"] = _to_target(rec.curve, exp.target_train_error)
    return record


# ---- the run ----
def read_results(out_dir: str) -> list:
    path = os.path.join(out_dir, "results.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # A run killed while writing its line leaves a torn last line: that run is redone.
                print(f"experiment: {path}:{n}: unreadable line ignored (its run will be redone)",
                      file=sys.stderr)
    return records


def run_experiment(name: str, out_dir: str, *, seeds: int | None = None, epochs: int | None = None,
                   train_subset: int | None = None, test_subset: int | None = None, data: str | None = None,
                   restart: bool = False, out="stdout", on_run: Callable[[dict], None] | None = None) -> dict:
    """Runs the experiment's missing (arm, seed) pairs into out_dir, then writes table.md and
    plot.png. Returns {'ran': records of the runs done now, 'records': all, 'table', 'plot'}.
    on_run(record) is called after each run is recorded (tests use it to interrupt). Progress
    lines go to `out`, a file (default sys.stdout; None: nowhere)."""
    exp = get(name)
    # "stdout" is looked up now, not at import, so that a redirected sys.stdout gets the lines.
    out = sys.stdout if out == "stdout" else out if out is not None else io.StringIO()
    b = exp.budget
    def given(v, default):  # None: the experiment's; 0 is a value (and an error below)
        return default if v is None else v

    budget = Budget(epochs=given(epochs, b.epochs), train_subset=given(train_subset, b.train_subset),
                    seeds=given(seeds, b.seeds), test_subset=given(test_subset, b.test_subset), batch=b.batch)
    for what, v in (("seeds", budget.seeds), ("epochs", budget.epochs), ("train_subset", budget.train_subset),
                    ("test_subset", budget.test_subset)):
        if v < 1:
            raise ValueError(f"{what} must be >= 1, got {v}")
    spec = data or exp.data
    prep = DataPrep(spec)
    channels, size, _ = prep.shape
    arms = exp.arms(prep.classes, channels, size)
    config = dict(experiment=name, data=spec, budget=budget.key(),
                  arms={a: json.loads(m.to_json()) for a, m in arms.items()})

    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "config.json")
    results_path = os.path.join(out_dir, "results.jsonl")
    if restart:
        for f in ("config.json", "results.jsonl", "table.md", "plot.png"):
            if os.path.exists(os.path.join(out_dir, f)):
                os.remove(os.path.join(out_dir, f))
    if os.path.exists(config_path):
        with open(config_path) as f:
            old = json.load(f)
        if old != config:
            changed = [k for k in ("experiment", "data", "budget") if old.get(k) != config[k]]
            if old.get("arms") != config["arms"]:
                changed.append("arms")
            detail = "; ".join(f"{k}: was {old.get(k)!r}, now {config[k]!r}" for k in changed if k != "arms")
            raise ValueError(f"{out_dir} holds results of another setup ({', '.join(changed)} changed"
                             + (f"; {detail}" if detail else "") + "): use --restart to discard them, "
                             "or another --out")
    else:
        with open(config_path, "w") as f:
            json.dump(config, f, indent=1)

    done = {(r["arm"], r["seed"]) for r in read_results(out_dir)}
    print(f"experiment {name}: {exp.question}", file=out)
    print(f"  {len(arms)} arms x {budget.seeds} seeds, {budget.epochs} epochs on {budget.train_subset} "
          f"training images of {prep.description}; results in {out_dir}", file=out, flush=True)
    todo = [(a, s) for s in range(1, budget.seeds + 1) for a in arms if (a, s) not in done]
    if len(todo) < len(arms) * budget.seeds:
        print(f"  resuming: {len(arms) * budget.seeds - len(todo)} runs already done, {len(todo)} to go",
              file=out, flush=True)
    ran = []
    if todo:
        train_src = _subset_source(prep.train_source, budget.train_subset, prep.classes, "training")
        test_src = _subset_source(prep.test_source, min(budget.test_subset, len(prep.test_source)),
                                  prep.classes, "test")
    for i, (arm, seed) in enumerate(todo, 1):
        print(f"run {i}/{len(todo)}: {arm}, seed {seed}", file=out, flush=True)
        record = _train_one(exp, arm, arms[arm], seed, train_src, test_src, prep, budget, out)
        with open(results_path, "a") as f:  # appended as each run ends: the resume point
            f.write(json.dumps(record) + "\n")
        ran.append(record)
        if on_run is not None:
            on_run(record)
    records = [r for r in read_results(out_dir) if r["seed"] <= budget.seeds and r["arm"] in arms]
    table = write_table(exp, budget, records, list(arms), os.path.join(out_dir, "table.md"))
    plot = write_plot(exp, records, list(arms), os.path.join(out_dir, "plot.png"))
    print(f"table: {table}\nplot: {plot}", file=out, flush=True)
    return dict(ran=ran, records=records, table=table, plot=plot)


# ---- reports ----
def summarise(values: list, digits: int = 4) -> str:
    """mean ± std (sample std, n-1) of the values that exist, and how many of the runs they are."""
    have = [v for v in values if v is not None]
    if not have:
        return f"not reached (0/{len(values)})"
    mean = float(np.mean(have))
    std = float(np.std(have, ddof=1)) if len(have) > 1 else float("nan")

    def fmt(x):
        return f"{x:.{digits}f}"
    text = fmt(mean) + ("" if math.isnan(std) else f" ± {fmt(std)}")
    if len(have) < len(values):
        text += f" ({len(have)}/{len(values)} reached)"
    return text


def write_table(exp: Experiment, budget: Budget, records: list, arms: list, path: str) -> str:
    lines = [f"# {exp.name}", "", f"Question: {exp.question}", "", f"Paper's claim: {exp.claim}", ""]
    if exp.notes:
        lines += [f"Setup: {exp.notes}", ""]
    lines += [f"Budget: {budget.epochs} epochs, {budget.train_subset} training images, "
              f"{budget.test_subset} test images, batch {budget.batch}; mean ± std over seeds.", ""]
    if exp.target_train_error is not None:
        lines += [f"Target training error: {exp.target_train_error}", ""]
    lines.append("| arm | seeds | " + " | ".join(exp.metrics) + " |")
    lines.append("|---|---|" + "---|" * len(exp.metrics))
    for arm in arms:
        rs = [r for r in records if r["arm"] == arm]
        if not rs:
            continue
        # errors to 4 places; epochs and seconds to 1-2 (they are coarse: epoch ends, wall time)
        cells = [summarise([r.get(m) for r in rs], 1 if m.startswith("seconds") else 2 if "epoch" in m else 4)
                 for m in exp.metrics]
        lines.append(f"| {arm} | {len(rs)} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_plot(exp: Experiment, records: list, arms: list, path: str) -> str:
    from .plots import _figure, _save
    fig = _figure(11, 4.2)
    axes = [fig.add_subplot(1, 2, k) for k in (1, 2)]
    for ax, key, title in zip(axes, ("train_error", "test_error"), ("training error", "test error")):
        for arm in arms:
            curves = [[p[key] for p in r["curve"]] for r in records if r["arm"] == arm]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            y = np.array([c[:n] for c in curves], dtype=float)
            x = np.arange(1, n + 1)
            mean = y.mean(axis=0)
            std = y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros(n)
            line, = ax.plot(x, mean, marker="o", ms=3, label=f"{arm} (n={len(y)})")
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        if key == "train_error" and exp.target_train_error is not None:
            ax.axhline(exp.target_train_error, color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(f"{exp.name}: {title} (mean ± 1 std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
