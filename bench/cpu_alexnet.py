"""CPU training-step benchmark: convnet against PyTorch on AlexNet.

What it measures
    The wall time of one training step -- forward (training mode, dropout on, cross-entropy
    loss), backward, and the SGD update (lr 0.01, momentum 0.9, weight decay 5e-4) -- on one
    fixed random float32 batch (default 32 x 3 x 224 x 224, 1000 classes), for

    * ``alexnet2012``: the two-tower network of Krizhevsky et al. (2012), ``convnet.zoo.alexnet_2012``,
      both towers on the CPU. The PyTorch twin writes the towers as grouped convolutions:
      conv1 96 11x11/4 pad 2 (groups 1: each tower reads all input channels), relu, LRN, pool 3/2;
      conv2 256 5x5 pad 2 groups 2, relu, LRN, pool; conv3 384 3x3 groups 1 (reads both towers);
      conv4 384 groups 2; conv5 256 groups 2; pool; fc6 9216->4096, dropout; fc7 4096->4096,
      dropout; fc8 4096->1000. LRN is the paper's (size 5, alpha 1e-4, beta 0.75, k 2), which in
      PyTorch is ``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)`` (PyTorch divides alpha by size).
    * ``onetower``: the one-tower "one weird trick" AlexNet, ``convnet.zoo.alexnet_one_tower``
      (64-192-384-256-256 filters, no LRN; the torchvision alexnet layers, written out here in plain
      ``torch.nn`` with dropout after fc6 and fc7 as in convnet's model).

    Both frameworks get the same batch, the same thread count (``--threads``, default
    ``os.cpu_count()``), float32 and the same initialisation scheme (gaussian std 0.01 weights,
    convnet's constant biases). After ``--warmup`` untimed steps, ``--steps`` steps are timed one
    by one, alternating between the frameworks (a convnet step, a torch step, ...) so that drift in
    a shared machine's speed falls on both alike; the report gives the median ms/step, images/s, the ratio torch ms / convnet ms (> 1
    means convnet is faster) and the median time of each phase of the step:

    * convnet: ``input`` (``set_batch``: the NCHW -> CHWN copy of the batch), ``forward``,
      ``backward``, ``update``;
    * PyTorch: ``input`` (``torch.from_numpy``), ``forward`` (model + loss), ``backward``,
      ``update`` (``zero_grad`` + ``optimizer.step``).

    The two SGD rules differ in form (convnet: v = mom v - lr (g + wc w); w += v; PyTorch:
    v = mom v + (g + wc w); w -= lr v) but cost the same.

How to run
    PyTorch is not a dependency of convnet. With any Python that can import convnet::

        PYTHONPATH=python python bench/cpu_alexnet.py              # convnet only if torch is missing

    and, to compare both in one run, a Python that has torch too (the convnet extension must be
    built for the same CPython version), e.g.::

        PYTHONPATH=python /opt/torchvenv/bin/python bench/cpu_alexnet.py --steps 5 --json /tmp/alexnet.json

    The header names the OpenBLAS kernel set convnet got: an OpenBLAS older than the CPU falls back
    to slow pre-AVX kernels (e.g. "Prescott"); OPENBLAS_CORETYPE=SkylakeX (or Haswell) in the
    environment overrides that choice.

    Options: --batch (32), --size (224), --threads (os.cpu_count()), --steps (5), --warmup (2),
    --nets (both | alexnet2012 | onetower), --json PATH. The markdown table printed at the end is
    meant for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import convnet

try:
    import torch
    from torch import nn
except ImportError:  # PyTorch is optional: without it only convnet is timed
    torch = None

PHASES = ("input", "forward", "backward", "update")
NETS = ("alexnet2012", "onetower")
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


# --------------------------------------------------------------------------- environment
def cpu_model() -> str:
    """The model name from /proc/cpuinfo, with family and model number (virtual machines often
    report only a generic name)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is enough
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    return name


# OpenBLAS kernels that predate AVX: a DYNAMIC_ARCH OpenBLAS too old for the CPU falls back to these.
PRE_AVX_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "generic",
                 "katmai", "coppermine", "northwood", "banias", "unknown"}


def openblas_config() -> str | None:
    """The kernel set ("core") and build of the OpenBLAS that convnet loaded, read from the
    library itself; None if none is found. numpy's own OpenBLAS (numpy.libs) is not convnet's."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "openblas" in path and "numpy.libs" not in path and path not in paths:
                    paths.append(path)
    except OSError:
        return None
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded: this only takes another reference
        except OSError:
            continue
        for prefix in ("", "scipy_"):  # the scipy-openblas wheels prefix their symbols
            try:
                corename = getattr(lib, prefix + "openblas_get_corename")
                config = getattr(lib, prefix + "openblas_get_config")
            except AttributeError:
                continue
            corename.restype = config.restype = ctypes.c_char_p
            found.append(f"core {corename().decode()} ({config().decode().strip()}; {os.path.basename(path)})")
            break
    return "; ".join(found) or None


def header(args) -> dict:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "convnet": convnet.__version__,
        "convnet_threads": convnet.num_threads(),
        "convnet_blas": convnet.blas_name(),
        "convnet_march": convnet.march(),
        "openblas": openblas_config(),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()) if torch is not None else None,
        "batch": args.batch, "size": args.size, "warmup": args.warmup, "steps": args.steps,
    }
    print(f"# convnet vs PyTorch: AlexNet training step on the CPU  ({info['date']})")
    print(f"cpu      : {info['cpu']} ({info['logical_cpus']} logical CPUs)")
    print(f"threads  : {args.threads} (convnet.num_threads() = {info['convnet_threads']}"
          + (f", torch.get_num_threads() = {info['torch_threads']})" if torch is not None else ")"))
    print(f"convnet  : {info['convnet']}, BLAS {info['convnet_blas']}, built for {info['convnet_march']} "
          f"(convnet.march()), python {info['python']}")
    if info["openblas"]:
        print(f"openblas : {info['openblas']}")
        core = info["openblas"].split()[1].lower()
        if core in PRE_AVX_CORES and "avx2" in open("/proc/cpuinfo").read():
            print(f"WARNING  : this OpenBLAS runs its pre-AVX '{core}' kernels on an AVX2/AVX-512 CPU (it does not "
                  "know this CPU model), which makes convnet's GEMMs several times slower; "
                  "OPENBLAS_CORETYPE=SkylakeX (or Haswell) in the environment overrides the choice")
    if torch is not None:
        print(f"torch    : {info['torch']}, mkldnn available: {info['torch_mkldnn']}")
    else:
        print("torch    : not importable in this Python -- timing convnet only")
    print(f"batch    : {args.batch} x 3 x {args.size} x {args.size}, float32, 1000 classes; "
          f"{args.warmup} warm-up + {args.steps} timed steps; median reported")
    print(flush=True)
    return info


# --------------------------------------------------------------------------- PyTorch twins
def _spatial(size: int) -> int:
    """Side of the pool5 output for an AlexNet input of side ``size`` (both variants)."""
    s = (size + 2 * 2 - 11) // 4 + 1        # conv1 11x11/4 pad 2
    s = (s - 3) // 2 + 1                    # pool1 3/2
    s = (s - 3) // 2 + 1                    # pool2 (conv2..5 keep the size)
    return (s - 3) // 2 + 1                 # pool5


def _lrn():
    return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def torch_alexnet2012(classes: int = 1000, size: int = 224) -> "nn.Module":
    """The two-tower 2012 AlexNet with the towers as convolution groups."""
    s = _spatial(size)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * s * s, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )


def torch_onetower(classes: int = 1000, size: int = 224) -> "nn.Module":
    """The one-tower ("one weird trick") AlexNet, torchvision's layers in plain torch.nn."""
    s = _spatial(size)
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * s * s, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )


def torch_init_like_convnet(model: "nn.Module", biases: list[float]) -> None:
    """Gaussian std 0.01 weights and convnet's constant biases (layer by layer), so both frameworks
    run in the same numeric regime (e.g. the same share of zeros after ReLU)."""
    layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(biases)
    with torch.no_grad():
        for m, b in zip(layers, biases):
            m.weight.normal_(0.0, 0.01)
            m.bias.fill_(b)


# convnet.zoo's initB for conv1..conv5, fc6, fc7, fc8 (same in both zoo models)
ZOO_BIASES = [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- timing
def summarise(framework: str, net_name: str, steps: list[dict], batch: int, params: int,
              losses: list[float]) -> dict:
    total = [s["total"] for s in steps]
    med = statistics.median(total)
    return {
        "framework": framework, "net": net_name, "parameters": params,
        "ms_per_step": med * 1e3, "images_per_s": batch / med,
        "min_ms": min(total) * 1e3, "max_ms": max(total) * 1e3,
        "phases_ms": {p: statistics.median(s[p] for s in steps) * 1e3 for p in PHASES},
        "steps_ms": [{k: v * 1e3 for k, v in s.items()} for s in steps],
        "loss_first": losses[0], "loss_last": losses[-1],
    }


def _progress(tag: str, i: int, n_warm: int, s: dict, loss: float) -> None:
    kind = f"warm-up {i + 1}" if i < n_warm else f"step {i - n_warm + 1}"
    phases = " ".join(f"{p} {s[p] * 1e3:7.1f}" for p in PHASES)
    print(f"  {tag:<8} {kind:<10} {s['total'] * 1e3:8.1f} ms  ({phases})  loss {loss:.4f}", flush=True)


def convnet_stepper(net_name: str, x: np.ndarray, y: np.ndarray, args):
    """Builds the convnet net; returns (one timed training step, parameter count)."""
    if net_name == "alexnet2012":
        net = convnet.Net(convnet.zoo.alexnet_2012(classes=1000, size=args.size), devices=["cpu", "cpu"])
    else:
        net = convnet.Net(convnet.zoo.alexnet_one_tower(classes=1000, size=args.size), devices="cpu")
    clock = time.perf_counter

    def step():
        t0 = clock()
        net.set_batch(x, y)
        t1 = clock()
        stats = net._net.forward(True)
        t2 = clock()
        net.backward()
        t3 = clock()
        net.update()
        t4 = clock()
        s = {"input": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "update": t4 - t3, "total": t4 - t0}
        return s, float(stats["objective"])

    return step, net.parameter_count


def torch_stepper(net_name: str, x: np.ndarray, y: np.ndarray, args):
    """Builds the PyTorch twin; returns (one timed training step, parameter count)."""
    torch.manual_seed(1)
    build = torch_alexnet2012 if net_name == "alexnet2012" else torch_onetower
    model = build(1000, args.size)
    torch_init_like_convnet(model, ZOO_BIASES)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.from_numpy(y)
    clock = time.perf_counter

    def step():
        t0 = clock()
        inputs = torch.from_numpy(x)
        t1 = clock()
        loss = loss_fn(model(inputs), labels)
        t2 = clock()
        loss.backward()
        t3 = clock()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = clock()
        s = {"input": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "update": t4 - t3, "total": t4 - t0}
        return s, float(loss.detach())

    return step, sum(p.numel() for p in model.parameters())


def run_interleaved(net_name: str, steppers: dict, batch: int, args) -> list[dict]:
    """Alternates one step of each framework, so that both see the same machine conditions
    (a shared machine's speed drifts over minutes); returns one summary per framework."""
    steps = {name: [] for name in steppers}
    losses = {name: [] for name in steppers}
    for i in range(args.warmup + args.steps):
        for name, (step, _) in steppers.items():
            s, loss = step()
            _progress(name, i, args.warmup, s, loss)
            if i >= args.warmup:
                steps[name].append(s)
                losses[name].append(loss)
    return [summarise(name, net_name, steps[name], batch, params, losses[name])
            for name, (_, params) in steppers.items()]


# --------------------------------------------------------------------------- report
def markdown(results: list[dict], info: dict) -> str:
    by_key = {(r["net"], r["framework"]): r for r in results}
    lines = [
        f"CPU training step, batch {info['batch']}, {info['size']}x{info['size']}, "
        f"{info['threads']} threads, {info['cpu']}; {info['date'][:10]}; convnet BLAS: {info['convnet_blas']}"
        + (f" ({info['openblas'].split(' (')[0]})" if info["openblas"] else "")
        + (f"; torch {info['torch']} (mkldnn {info['torch_mkldnn']})" if info["torch"] else "; torch not run"),
        "",
        "| net | framework | ms/step | images/s | input | forward | backward | update | torch / convnet |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = ""
        if r["framework"] == "convnet" and (r["net"], "torch") in by_key:
            ratio = f"{by_key[(r['net'], 'torch')]['ms_per_step'] / r['ms_per_step']:.2f}"
        ph = r["phases_ms"]
        lines.append(f"| {r['net']} | {r['framework']} | {r['ms_per_step']:.0f} | {r['images_per_s']:.1f} | "
                     + " | ".join(f"{ph[p]:.0f}" for p in PHASES) + f" | {ratio} |")
    lines.append("")
    lines.append("(median of the timed steps, the frameworks' steps interleaved; phase columns in ms; "
                 "torch / convnet > 1 means convnet is faster)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--nets", choices=("both",) + NETS, default="both")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--steps, --batch and --threads must be >= 1, --warmup >= 0")

    convnet.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    info = header(args)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
    y = rng.integers(0, 1000, size=args.batch).astype(np.int64)

    results = []
    for net_name in NETS if args.nets == "both" else (args.nets,):
        print(f"## {net_name}", flush=True)
        steppers = {"convnet": convnet_stepper(net_name, x, y, args)}
        if torch is not None:
            steppers["torch"] = torch_stepper(net_name, x, y, args)
        runs = run_interleaved(net_name, steppers, len(x), args)
        for r in runs:
            print(f"  {r['framework']:<8} {r['ms_per_step']:8.1f} ms/step  {r['images_per_s']:7.1f} images/s  "
                  f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}; {r['parameters']:,} parameters)", flush=True)
        if len(runs) == 2:
            print(f"  torch / convnet: {runs[1]['ms_per_step'] / runs[0]['ms_per_step']:.2f}", flush=True)
        print(flush=True)
        results.extend(runs)

    print(markdown(results, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
