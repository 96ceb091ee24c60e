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
from dataclasses import dataclass, field
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
class Arm:
    """One variant of an experiment: a model and how it is trained. `train` and `test` are extra
    Pipeline options of the training and test data (mirror, crop, scale_jitter, test_scale,
    pca_std, scale, ...); `schedule` the learning-rate schedule (convnet.Schedule's text);
    `facts` fixed figures of the variant (parameters, multiply-adds, receptive field) for the
    table, computed when the arm is built."""
    model: Model
    train: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    schedule: str = "constant"
    facts: dict = field(default_factory=dict)

    def config(self) -> dict:
        # Through JSON so that a config read back from disk compares equal (tuples become lists).
        return json.loads(json.dumps(dict(model=json.loads(self.model.to_json()), train=self.train,
                                          test=self.test, schedule=self.schedule)))


@dataclass
class Experiment:
    name: str
    question: str
    claim: str  # the paper's claim, with its figure or table
    arms: Callable[[int, int, int], dict]  # (classes, channels, size) -> {arm name: Arm or Model}
    metrics: list  # names of the record fields the table summarises
    budget: Budget
    target_train_error: float | None = None  # for epochs/seconds to reach a training error
    notes: str = ""
    data: str = "fashion-mnist"


def _arm(value) -> Arm:
    return value if isinstance(value, Arm) else Arm(value)


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


def _block_facts(model: Model, prefix: str) -> dict:
    """Parameters and multiply-adds (per image) of the layers whose names start with `prefix`, and
    the receptive field of their stack in its own input's pixels (stride-1 convs: 1 + sum(k - 1))."""
    from .summary import summary
    rows = [r for r in summary(model) if r["name"].startswith(prefix)]
    sizes = [layer["size"] for layer in json.loads(model.to_json())["layers"] if layer["name"].startswith(prefix)]
    return dict(block_params=sum(r["params"] for r in rows), block_macs=sum(r["macs"] for r in rows),
                block_rf=1 + sum(k - 1 for k in sizes))


def _stacked(blocks, classes, channels, size, **kw) -> Arm:
    model = zoo.stacked_convnet(blocks, classes=classes, channels=channels, size=size, **kw)
    return Arm(model, facts=_block_facts(model, "conv2_"))


# The blocks compared by filter-stacks and one-by-one: block 1 is one 3x3 conv of 32 filters,
# block 2 (conv2_*) is the variant, then the classifier.
_FIRST_BLOCK = [(32, 3)]


def _filter_stacks(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    # Block 2 keeps 32 channels in and out, VGG's case (C channels -> C channels): a k x k conv
    # costs k^2 C^2 weights, a stack of n 3x3 convs 9 n C^2 and sees the same 1 + 2n pixels.
    return {name: _stacked([_FIRST_BLOCK, block], **kw) for name, block in (
        ("one 5x5", [(32, 5)]), ("two 3x3", [(32, 3)] * 2),
        ("one 7x7", [(32, 7)]), ("three 3x3", [(32, 3)] * 3))}


def _one_by_one(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    # VGG's B, C and D differ in blocks 3-5: two 3x3 convs (B), plus a 1x1 (C), or plus a 3x3 (D).
    return {name: _stacked([_FIRST_BLOCK, block], **kw) for name, block in (
        ("B: two 3x3", [(64, 3)] * 2), ("C: two 3x3 + 1x1", [(64, 3)] * 2 + [(64, 1)]),
        ("D: three 3x3", [(64, 3)] * 3))}


def _local_vs_conv(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    arms = {}
    for top in ("conv", "local"):
        model = zoo.stacked_convnet([_FIRST_BLOCK, [(64, 3)]], top=top, **kw)
        arms[f"{top} 3x3"] = Arm(model, facts=_block_facts(model, "top"))
    return arms


# The paper's inputs for its N(0, 0.01) init: pixels minus the mean, in 0-255 levels (scale 1),
# where unit-variance inputs (the experiments' default) would shrink every layer's signal 90-fold.
_RAW_PIXELS = dict(scale=1.0)


def _biases_init(classes, channels, size):
    kw = dict(classes=classes, channels=channels, size=size)
    arms = {}
    for init, pixels, label in (("kaiming", {}, "kaiming"), ("gaussian", _RAW_PIXELS, "N(0,0.01)")):
        for bias in (1.0, 0.0):
            arms[f"{label}, biases {bias:g}"] = Arm(zoo.fashion_alexnet(init=init, bias=bias, **kw),
                                                   train=dict(pixels), test=dict(pixels))
    return arms


def _schedules(classes, channels, size):
    model = zoo.fashion_alexnet(classes=classes, channels=channels, size=size)
    return {"constant": Arm(model),
            # The default job's: the paper's rule, divide by 10 when the test error stops improving.
            "plateau (/10)": Arm(model, schedule="plateau[factor=0.1;patience=1;maxDrops=2]"),
            # cuda-convnet2's ImageNet files: exp decay in steps, here to 1/100 in three steps.
            "dexp (to 1/100)": Arm(model, schedule="dexp[tgtFactor=100;numSteps=3]")}


def _augmentation(classes, channels, size):
    kw = dict(classes=classes, channels=channels)
    full = zoo.fashion_alexnet(size=size, **kw)
    crop = size * 6 // 7  # AlexNet's 224 of 256, scaled: 24 of 28
    cropped = zoo.fashion_alexnet(size=crop, **kw)
    arms = {"none": Arm(full),
            "reflections": Arm(full, train=dict(mirror=True)),
            f"crops {crop} + reflections": Arm(cropped, train=dict(crop=crop, mirror=True), test=dict(crop=crop)),
            f"scale jitter {size}-{size * 8 // 7} + reflections":
                Arm(full, train=dict(crop=size, scale_jitter=(size, size * 8 // 7), mirror=True))}
    if channels == 3:  # colour noise along the RGB principal components means nothing on grey images
        arms["reflections + PCA colour noise"] = Arm(full, train=dict(mirror=True, pca_std=0.1))
    return arms


EXPERIMENTS = {e.name: e for e in [
    Experiment(
        name="neurons",
        question="How much faster do ReLU units train than saturating ones (tanh, logistic, softsign)?",
        claim="AlexNet (Krizhevsky et al. 2012), figure 1: a four-layer convolutional net with ReLUs "
              "reaches 25% training error on CIFAR-10 six times faster than the same net with tanh units.",
        arms=_neurons,
        metrics=["epochs_to_target", "seconds_to_target", "train_error", "test_error", "seconds"],
        budget=Budget(epochs=8, train_subset=6000, seeds=3),
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
        budget=Budget(epochs=20, train_subset=1000, seeds=3, test_subset=1000),
        notes="fashion_alexnet with dropout 0.5 on its hidden fc layer, or none. best_epoch is the "
              "epoch of the lowest test error (a proxy for the time to converge)."),
    Experiment(
        name="filter-stacks",
        question="Is a stack of 3x3 convolutions better than one large filter with the same receptive field?",
        claim="VGG (Simonyan & Zisserman 2014), sections 2.3 and 4.1: three 3x3 layers see 7x7 with "
              "27C^2 weights instead of 49C^2 and two more non-linearities; a net made from B by replacing "
              "each pair of 3x3 convs with one 5x5 conv had a 7% higher top-1 error (centre crop).",
        arms=_filter_stacks,
        metrics=["block_params", "block_macs", "block_rf", "test_error", "train_error", "seconds"],
        budget=Budget(epochs=8, train_subset=4000, seeds=3),
        notes="stacked_convnet: block 1 one 3x3 conv (32), block 2 the variant with 32 channels in and "
              "out, each block then a 2x2 pool; fc 256 with dropout, fc 10. block_* are block 2's "
              "parameters, multiply-adds per image and receptive field in its input's pixels."),
    Experiment(
        name="one-by-one",
        question="What does a 1x1 convolution add to a block of 3x3 convolutions (VGG B vs C vs D)?",
        claim="VGG (Simonyan & Zisserman 2014), table 3 (single-scale test, S=256): C (B plus 1x1 convs) "
              "28.1% top-1 error against B's 28.7%, since the extra non-linearity helps, but D (B plus "
              "3x3 convs instead) 27.0%: spatial context matters too.",
        arms=_one_by_one,
        metrics=["block_params", "block_macs", "test_error", "train_error", "seconds"],
        budget=Budget(epochs=8, train_subset=4000, seeds=3),
        notes="stacked_convnet: block 1 one 3x3 conv (32), block 2 B's pair of 3x3 convs (64), with a "
              "1x1 conv (C) or a third 3x3 conv (D) added; fc 256 with dropout, fc 10."),
    Experiment(
        name="biases-init",
        question="Do biases of 1 speed up the start of learning under ReLU, and what does the init do?",
        claim="AlexNet (Krizhevsky et al. 2012), section 5: weights from N(0, 0.01), and biases of 1 in "
              "conv2, conv4, conv5 and the hidden fc layers, which accelerates the early stages of "
              "learning by giving the ReLUs positive inputs (the other biases 0).",
        arms=_biases_init,
        metrics=["steps_to_learn", "test_error", "train_error"],
        budget=Budget(epochs=4, train_subset=4000, seeds=3),
        notes="fashion_alexnet with biases of 1 or 0 in conv2 and the hidden fc layers, and kaiming "
              "init (std sqrt(2/fan_in)) on unit-variance inputs or the paper's N(0, 0.01) on the "
              "paper's inputs (pixels minus their mean, 0-255 levels). steps_to_learn: the first "
              "step at which the mean training cost of the last 10 batches is below 0.9 ln(classes) "
              "(chance is ln(classes))."),
    Experiment(
        name="schedules",
        question="Dividing the rate by 10 when the test error stops improving, against a constant rate "
                 "and cuda-convnet2's stepped exponential decay",
        claim="AlexNet (Krizhevsky et al. 2012), section 5: the learning rate, 0.01 at first, was divided "
              "by 10 when the validation error stopped improving, three times before training ended.",
        arms=_schedules,
        metrics=["test_error", "best_test_error", "train_error", "seconds"],
        budget=Budget(epochs=20, train_subset=1000, seeds=3, test_subset=1000, batch=32),
        notes="fashion_alexnet; plateau is the default job's (divide by 10 after one test without "
              "improvement, at most twice); dexp goes to 1/100 of the rate in three steps."),
    Experiment(
        name="augmentation",
        question="What do random crops, reflections, scale jittering and PCA colour noise buy?",
        claim="AlexNet (Krizhevsky et al. 2012), section 4.1: without the crops and reflections the net "
              "overfits substantially; the colour noise lowers top-1 error by over 1%. VGG, table 3: "
              "scale jittering in training (S in [256, 512]) lowers D's and E's top-1 error by 1.2-1.8 "
              "points against a fixed S of 256 or 384.",
        arms=_augmentation,
        metrics=["test_error", "train_error", "gap", "seconds"],
        budget=Budget(epochs=20, train_subset=1000, seeds=3, test_subset=1000),
        notes="fashion_alexnet; crops as AlexNet (a random 24x24 of 28x28 in training, a net for 24x24, "
              "the centre crop in test), scale jittering as VGG (shorter side S in [28, 32], a random "
              "28x28 crop; test as is). PCA colour noise (0.1) runs only on colour data (--data with a "
              "folder of RGB images): on grey Fashion-MNIST it has no colour to perturb."),
    Experiment(
        name="local-vs-conv",
        question="Does a locally connected (unshared) layer beat a convolution at the top of the net?",
        claim="No paper measures this swap: cuda-convnet2's CIFAR-10 model (layers-cifar10-11pct.cfg, "
              "named for its 11% test error) ends in two locally connected layers (local3, local4) "
              "instead of convolutions, at the cost of a filter bank per position.",
        arms=_local_vs_conv,
        metrics=["block_params", "block_macs", "test_error", "train_error", "gap", "seconds"],
        budget=Budget(epochs=8, train_subset=4000, seeds=3),
        notes="stacked_convnet: a 3x3 conv (32) and a 3x3 conv (64), each with a 2x2 pool, then a "
              "3x3 layer of 32 on the 7x7 map, shared (conv) or unshared (local), then fc 256 with "
              "dropout, fc 10. block_* are that layer's parameters and multiply-adds per image."),
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
    """The per-epoch curve, each step's training cost, and a progress line per epoch."""

    def __init__(self, label: str, out):
        self.label, self.out, self.curve, self.costs, self.start = label, out, [], [], time.time()

    def on_batch(self, e):
        self.costs.append(e["cost"])

    def on_epoch(self, e):
        test = e["test"]
        point = dict(epoch=e["epoch"], train_error=e["train"]["top1_error"], train_cost=e["train"]["cost"],
                     test_error=test["top1_error"] if test else None, lr=e["lr"],
                     seconds=time.time() - self.start)
        self.curve.append(point)
        if self.out:
            tested = f"  test error {point['test_error']:.4f}" if test else ""
            print(f"  {self.label} epoch {point['epoch']}: train error {point['train_error']:.4f}{tested}  "
                  f"({point['seconds']:.1f} s)", file=self.out, flush=True)


# "Learning has started" when the mean training cost of the last LEARNING_WINDOW steps is below
# LEARNING_STARTED times the cost of chance, ln(classes).
LEARNING_WINDOW = 10
LEARNING_STARTED = 0.9


def _steps_to_learn(costs: list, classes: int):
    """The first step (1-based) at which learning has started (see LEARNING_STARTED); None if never."""
    threshold = LEARNING_STARTED * math.log(classes)
    window = 0.0
    for i, c in enumerate(costs):
        window += c - (costs[i - LEARNING_WINDOW] if i >= LEARNING_WINDOW else 0.0)
        if i + 1 >= LEARNING_WINDOW and window / LEARNING_WINDOW < threshold:
            return i + 1
    return None


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


def _pipelines(arm: Arm, train_src, test_src, prep: DataPrep, batch: int, seed: int):
    """The training and test pipelines of a run: the data set's normalisation, and no augmentation
    but the arm's (the Pipeline would reflect training images by default)."""
    norm = dict(mean_value=prep.mean_value, scale=prep.scale, stats=prep.stats)  # stats: PCA colour noise
    train = Pipeline(train_src, batch, seed=seed, train=True, shuffle=True, **{**norm, "mirror": False, **arm.train})
    test = Pipeline(test_src, batch, train=False, shuffle=False, **{**norm, **arm.test})
    return train, test


def _train_one(exp: Experiment, arm_name: str, arm: Arm, seed: int, train_src, test_src, prep: DataPrep,
               budget: Budget, out) -> dict:
    net = Net(arm.model, seed=seed)
    train, test = _pipelines(arm, train_src, test_src, prep, budget.batch, seed)
    rec = _Recorder(f"{arm_name} seed {seed}", out)
    start = time.time()
    Trainer(net, train, test, epochs=budget.epochs, schedule=arm.schedule, callbacks=[rec], progress=False).run()
    last = rec.curve[-1]
    record = dict(arm=arm_name, seed=seed, test_error=last["test_error"], train_error=last["train_error"],
                  gap=last["test_error"] - last["train_error"], seconds=time.time() - start, curve=rec.curve,
                  **arm.facts)
    best = min(rec.curve, key=lambda p: p["test_error"])
    record["best_epoch"], record["best_test_error"] = best["epoch"], best["test_error"]
    if exp.target_train_error is not None:
        record["target_train_error"] = exp.target_train_error
        record["epochs_to_target"], record["seconds_to_target"] = _to_target(rec.curve, exp.target_train_error)
    if "steps_to_learn" in exp.metrics:
        record["steps_to_learn"] = _steps_to_learn(rec.costs, prep.classes)
        record["learning_threshold"] = LEARNING_STARTED * math.log(prep.classes)
        record["step_costs"] = rec.costs
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
    arms = {a: _arm(v) for a, v in exp.arms(prep.classes, channels, size).items()}
    config = dict(experiment=name, data=spec, budget=budget.key(), arms={a: v.config() for a, v in arms.items()})

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


def _cell(values: list, metric: str) -> str:
    """A table cell: a fixed figure of the arm (the same integer in every run) as it is; errors to
    4 places; epochs and seconds to 1-2 (they are coarse: epoch ends, wall time); steps to 0."""
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values) and len(set(values)) == 1 \
            and not metric.startswith(("steps", "best_epoch")):
        return f"{values[0]:,}"
    digits = 1 if metric.startswith("seconds") else 2 if "epoch" in metric else 0 if metric.startswith("steps") else 4
    return summarise(values, digits)


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
        cells = [_cell([r.get(m) for r in rs], m) for m in exp.metrics]
        lines.append(f"| {arm} | {len(rs)} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_plot(exp: Experiment, records: list, arms: list, path: str) -> str:
    from .plots import _figure, _save
    with_steps = any("step_costs" in r for r in records)
    panels = 3 if with_steps else 2
    fig = _figure(5.5 * panels, 4.2)
    axes = [fig.add_subplot(1, panels, k) for k in range(1, panels + 1)]
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
    if with_steps:  # the start of learning: each step's training cost, mean over seeds
        ax = axes[2]
        for arm in arms:
            costs = [r["step_costs"] for r in records if r["arm"] == arm and "step_costs" in r]
            if costs:
                n = min(len(c) for c in costs)
                ax.plot(np.arange(1, n + 1), np.mean([c[:n] for c in costs], axis=0), lw=1, label=arm)
        threshold = next(r["learning_threshold"] for r in records if "learning_threshold" in r)
        ax.axhline(threshold, color="grey", ls="--", lw=1, label="learning started")
        ax.set_xlabel("step")
        ax.set_ylabel("training cost")
        ax.set_title(f"{exp.name}: training cost per step (mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
