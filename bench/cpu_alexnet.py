"""CPU training-step benchmark: convnet against PyTorch at its best, on AlexNet and VGG.

What it measures
    The wall time of one training step -- forward (training mode, dropout on, cross-entropy
    loss), backward, and the SGD update (lr 0.01, momentum 0.9, weight decay 5e-4) -- on one
    fixed random float32 batch (224 x 224, 1000 classes), for four nets:

    * ``alexnet2012`` (batch 32): the two-tower network of Krizhevsky et al. (2012),
      ``convnet.zoo.alexnet_2012``, both towers on the CPU. The PyTorch twin writes the towers as
      grouped convolutions: conv1 96 11x11/4 pad 2 (groups 1: each tower reads all input
      channels), relu, LRN, pool 3/2; conv2 256 5x5 pad 2 groups 2, relu, LRN, pool; conv3 384
      3x3 groups 1 (reads both towers); conv4 384 groups 2; conv5 256 groups 2; pool; fc6
      9216->4096, dropout; fc7 4096->4096, dropout; fc8 4096->1000. LRN is the paper's (size 5,
      alpha 1e-4, beta 0.75, k 2), which in PyTorch is ``nn.LocalResponseNorm(5, alpha=5e-4,
      beta=0.75, k=2)`` (PyTorch divides alpha by size).
    * ``onetower`` (batch 32): the one-tower "one weird trick" AlexNet,
      ``convnet.zoo.alexnet_one_tower`` (64-192-384-256-256 filters, no LRN; torchvision's
      alexnet layers in plain ``torch.nn``, with dropout after fc6 and fc7 as in convnet's model).
    * ``vgg_a`` and ``vgg_d`` (batch 8): VGG configurations A (11 weight layers) and D (16),
      ``convnet.zoo.vgg``; the twin is the same stack of 3x3 convs, 2x2 pools and fc layers.

    PyTorch runs in three configurations, and convnet is compared with the fastest:

    * ``eager``: NCHW tensors, ``torch.optim.SGD`` with its per-parameter loop (``foreach=False``,
      PyTorch's default on the CPU);
    * ``tuned``: the model and the batch in ``channels_last``, SGD with ``foreach=True``;
    * ``compile``: ``torch.compile(model)`` (Inductor; NCHW), SGD with ``foreach=True``. Its
      compilation happens in the warm-up steps.

    All get the same batch, the same thread count (``--threads``, default ``os.cpu_count()``)
    and float32, and the same initialisation scheme (gaussian std 0.01 weights; convnet's constant
    biases for the AlexNets, zero for the VGGs, as the VGG paper). After
    ``--warmup`` untimed steps, ``--steps`` steps are timed one by one, alternating between the
    frameworks (a convnet step, a step of each torch variant, ...) so that drift in a shared
    machine's speed falls on all alike; the report gives the median ms/step, images/s and the
    ratio best-torch ms / convnet ms (> 1 means convnet is faster).

    Besides the times, per net:

    * **FLOP/s against the machine's GEMM peak.** The step's floating-point work is counted from
      the layers (2 multiply-adds per weight per output position for conv and fc; backward
      twice forward, or once for a layer fed by the input, whose input gradient nobody needs).
      The peak is measured here: a large square float32 GEMM through numpy's BLAS and through
      convnet's own (an fc layer whose forward is one N x N x N GEMM), the faster counting;
      again before every net, and the highest of all counts (a shared machine's speed drifts).
    * **A per-layer profile** of convnet (``Net.set_profiling``: forward and backward ms per
      layer, their GFLOP/s and share of the GEMM peak; for layers without a GEMM, the
      activation bytes a pass must at least read and write, as GB/s against the machine's
      measured copy bandwidth: such a layer is memory-bound). And inside each conv and fc layer
      (``layer_times()``'s ``forward_ops``/``backward_ops``, timed by the op dispatcher): its
      GEMMs alone, at their GFLOP/s and share of the peak, and the memory-bound passes around
      them (im2col, col2im, the bias and the neuron), at the GB/s of their least traffic against
      the copy bandwidth; so a slow convolution shows whether its GEMMs or its copies are slow.
    * **Peak memory**, each framework in a fresh process of its own (``--memory``, on by
      default): the resident set's peak (``VmHWM``) over one warm-up and two steps, whole
      and above the process's resident set before the net was built (the imports and the batch).
      convnet's own accounting comes with it: ``convnet.host_memory_stats()`` (every host tensor,
      current and peak) and ``Net.memory_use()`` (parameters, gradients, solver state,
      activations, activation gradients, layer buffers, workspace), with the largest blocks.

How to run
    PyTorch is not a dependency of convnet. With any Python that can import convnet::

        PYTHONPATH=python python bench/cpu_alexnet.py              # convnet only if torch is missing

    and, to compare both in one run, a Python that has torch too (the convnet extension must be
    built for the same CPython version), e.g.::

        PYTHONPATH=python /opt/torchvenv/bin/python bench/cpu_alexnet.py --json /tmp/cpu.json

    The header names the CPU, its vector extensions and the OpenBLAS kernel set convnet got: an
    OpenBLAS older than the CPU falls back to slow pre-AVX kernels (e.g. "Prescott");
    OPENBLAS_CORETYPE=SkylakeX (or Haswell) in the environment overrides that choice.

    Options: --nets (all, or a comma list of alexnet2012, onetower, vgg_a, vgg_d), --batch (the
    per-net default above), --size (224), --threads, --steps (5), --warmup (2), --variants
    (eager,tuned,compile), --no-memory, --no-profile, --json PATH. The markdown tables printed
    at the end are meant for bench/RESULTS.md. A 2-core machine took 20-21 minutes for all
    four nets.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# A memory child (--memory) imports only the framework it measures, so that the other's
# libraries do not sit in its resident set.
_CHILD = os.environ.get("CONVNET_BENCH_CHILD", "")
if _CHILD != "torch":
    import convnet
else:
    convnet = None
try:
    if _CHILD == "convnet":
        raise ImportError("not in a convnet memory child")
    import torch
    from torch import nn
except ImportError:  # PyTorch is optional: without it only convnet is timed
    torch = None

PHASES = ("input", "forward", "backward", "update")
NETS = ("alexnet2012", "onetower", "vgg_a", "vgg_d")
DEFAULT_BATCH = {"alexnet2012": 32, "onetower": 32, "vgg_a": 8, "vgg_d": 8}
TORCH_VARIANTS = ("eager", "tuned", "compile")
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
MIB = 1 << 20


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


def vector_extensions() -> str:
    """The widest x86 vector extensions the CPU reports (what decides OpenBLAS's kernels)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "avx2", "fma", "avx") if f in flags]
    return " ".join(found) or "no AVX"


def header(args) -> dict:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "vector_extensions": vector_extensions(),
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
        "size": args.size, "warmup": args.warmup, "steps": args.steps,
    }
    print(f"# convnet vs PyTorch: training step on the CPU  ({info['date']})")
    print(f"cpu      : {info['cpu']} ({info['logical_cpus']} logical CPUs; {info['vector_extensions']})")
    print(f"threads  : {args.threads} (convnet.num_threads() = {info['convnet_threads']}"
          + (f", torch.get_num_threads() = {info['torch_threads']})" if torch is not None else ")"))
    print(f"convnet  : {info['convnet']}, BLAS {info['convnet_blas']}, built for {info['convnet_march']} "
          f"(convnet.march()), python {info['python']}")
    if info["openblas"]:
        print(f"openblas : {info['openblas']}")
        core = info["openblas"].split()[1].lower()
        if core in PRE_AVX_CORES and "avx2" in info["vector_extensions"]:
            print(f"WARNING  : this OpenBLAS runs its pre-AVX '{core}' kernels on an AVX2/AVX-512 CPU (it does not "
                  "know this CPU model), which makes convnet's GEMMs several times slower; "
                  "OPENBLAS_CORETYPE=SkylakeX (or Haswell) in the environment overrides the choice")
    if torch is not None:
        print(f"torch    : {info['torch']}, mkldnn available: {info['torch_mkldnn']}; variants {', '.join(args.variants)}")
    else:
        print("torch    : not importable in this Python -- timing convnet only")
    print(f"steps    : {args.size}x{args.size}, float32, 1000 classes; {args.warmup} warm-up + {args.steps} timed "
          "steps; median reported")
    print(flush=True)
    return info


# --------------------------------------------------------------------------- the machine's limits
def _best_seconds(fn, repeat: int) -> float:
    fn()  # warm: first-touch page faults, thread start-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_gemm_peak(n: int = 2048, repeat: int = 5) -> dict:
    """A large square float32 GEMM (2 n^3 FLOP), best of `repeat`: through numpy's BLAS (all its
    threads) and through convnet's (an fc layer of n inputs and n outputs on a batch of n, whose
    forward is that GEMM plus n^2 bias adds). The peak is the faster of the two."""
    flop = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    numpy_s = _best_seconds(lambda: np.matmul(a, b, out=c), repeat)
    m = convnet.Model()
    m.input("data", channels=n, size=1)
    m.fc("fc", "data", outputs=n)
    net = convnet.Net(m, devices="cpu")
    net.set_batch(a.reshape(n, n, 1, 1))
    convnet_s = _best_seconds(lambda: net._net.forward(False), repeat)
    out = {"n": n, "numpy_gflops": flop / numpy_s / 1e9, "convnet_gflops": flop / convnet_s / 1e9}
    out["peak_gflops"] = max(out["numpy_gflops"], out["convnet_gflops"])
    return out


def measure_bandwidth(mib: int = 256, repeat: int = 5) -> dict:
    """Copy bandwidth of main memory: bytes read plus bytes written per second, copying `mib` MiB
    (far beyond any cache) with all threads (torch's copy_) where torch is here, else numpy's
    one-thread copy."""
    floats = mib * MIB // 4
    if torch is not None:
        src, dst = torch.ones(floats), torch.empty(floats)
        seconds, how = _best_seconds(lambda: dst.copy_(src), repeat), "torch copy_, all threads"
    else:
        src, dst = np.ones(floats, np.float32), np.empty(floats, np.float32)
        seconds, how = _best_seconds(lambda: np.copyto(dst, src), repeat), "numpy copyto, one thread"
    return {"gbps": 2 * floats * 4 / seconds / 1e9, "how": how}


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


def torch_vgg(config: str, classes: int = 1000, size: int = 224) -> "nn.Module":
    """VGG configuration `config` with convnet.zoo's layer list (3x3 pad 1 convs, 2x2 pools)."""
    layers, channels = [], 3
    for block in vgg_blocks(config):
        for filters, k in block:
            layers += [nn.Conv2d(channels, filters, k, padding=k // 2), nn.ReLU(inplace=True)]
            channels = filters
        layers.append(nn.MaxPool2d(2, 2))
    s = size // 32
    return nn.Sequential(*layers, nn.Flatten(),
                         nn.Linear(512 * s * s, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(4096, classes))


def vgg_blocks(config: str) -> list:
    """convnet.zoo.VGG_CONFIGS[config]; a torch memory child, which does not import convnet, gets
    it from its parent (CONVNET_BENCH_VGG_BLOCKS)."""
    if convnet is not None:
        return convnet.zoo.VGG_CONFIGS[config]
    return json.loads(os.environ["CONVNET_BENCH_VGG_BLOCKS"])


def torch_model(net_name: str, size: int) -> "nn.Module":
    if net_name == "alexnet2012":
        model = torch_alexnet2012(1000, size)
    elif net_name == "onetower":
        model = torch_onetower(1000, size)
    else:  # VGG, in the paper's init as convnet's twin below: N(0, 0.01) weights, zero biases
        model = torch_vgg(net_name[-1].upper(), 1000, size)
        torch_init_like_convnet(model, [0.0] * sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model))
        return model
    torch_init_like_convnet(model, ZOO_BIASES)
    return model


def convnet_net(net_name: str, size: int) -> "convnet.Net":
    if net_name == "alexnet2012":  # both towers on the CPU
        return convnet.Net(convnet.zoo.alexnet_2012(classes=1000, size=size), devices=["cpu", "cpu"])
    if net_name == "onetower":
        return convnet.Net(convnet.zoo.alexnet_one_tower(classes=1000, size=size), devices="cpu")
    # The paper's N(0, 0.01) init (not the zoo's default Kaiming): with random labels and lr 0.01
    # Kaiming's larger weights make the loss run away, and the two frameworks must compute in one
    # numeric regime.
    return convnet.Net(convnet.zoo.vgg(net_name[-1].upper(), classes=1000, size=size, init="gaussian"),
                       devices="cpu")


# --------------------------------------------------------------------------- work per layer
GEMM_TYPES = ("conv", "fc", "local")


def layer_work(net: "convnet.Net", batch: int) -> list[dict]:
    """Per layer: its type, the FLOP of its forward and backward (conv, fc, local: 2 per weight
    per output position and example; backward twice forward, or once where no input needs a
    gradient), and the activation bytes each pass must at least read and write (inputs and
    output forward; output gradient, inputs and input gradients backward)."""
    layers = net.layers()
    by_name = {l["name"]: l for l in layers}
    weights: dict[str, int] = {}
    for p in net.param_names():
        layer, _, kind = p.rpartition(".")
        if kind != "biases":
            weights[layer] = weights.get(layer, 0) + int(np.prod(net.get_param(p).shape))
    out = []
    for l in layers:
        if l["role"] in ("input", "labels"):
            continue
        c, h, w = l["shape"]
        out_elems = c * h * w
        ins = [by_name[i] for i in l["inputs"] if by_name[i]["role"] != "labels"]
        in_elems = sum(int(np.prod(i["shape"])) for i in ins)
        needs_input_grad = any(i["role"] != "input" for i in ins)
        fwd_flop = 0.0
        if l["type"] in GEMM_TYPES:
            positions = h * w if l["type"] == "conv" else 1  # local and fc weights are per position
            fwd_flop = 2.0 * batch * positions * weights.get(l["name"], 0)
        out.append({
            "layer": l["name"], "type": l["type"],
            "forward_flop": fwd_flop, "backward_flop": fwd_flop * (2 if needs_input_grad else 1),
            "forward_bytes": 4.0 * batch * (in_elems + out_elems),
            "backward_bytes": 4.0 * batch * (out_elems + in_elems + (in_elems if needs_input_grad else 0)),
        })
    return out


# --------------------------------------------------------------------------- steppers
def convnet_stepper(net_name: str, x: np.ndarray, y: np.ndarray, args):
    """Builds the convnet net; returns (one timed training step, parameter count, the net)."""
    net = convnet_net(net_name, args.size)
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

    return step, net.parameter_count, net


def torch_stepper(net_name: str, variant: str, x: np.ndarray, y: np.ndarray, args):
    """Builds the PyTorch twin in `variant` (eager, tuned, compile); returns (one timed training
    step, parameter count, the model)."""
    torch.manual_seed(1)
    model = torch_model(net_name, args.size)
    model.train()
    channels_last = variant == "tuned"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                          foreach=variant != "eager")
    run = torch.compile(model) if variant == "compile" else model
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.from_numpy(y)
    clock = time.perf_counter

    def step():
        t0 = clock()
        inputs = torch.from_numpy(x)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        t1 = clock()
        loss = loss_fn(run(inputs), labels)
        t2 = clock()
        loss.backward()
        t3 = clock()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = clock()
        s = {"input": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "update": t4 - t3, "total": t4 - t0}
        return s, float(loss.detach())

    return step, sum(p.numel() for p in model.parameters()), model


# --------------------------------------------------------------------------- timing
def summarise(framework: str, net_name: str, steps: list[dict], batch: int, params: int,
              losses: list[float]) -> dict:
    total = [s["total"] for s in steps]
    med = statistics.median(total)
    return {
        "framework": framework, "net": net_name, "batch": batch, "parameters": params,
        "ms_per_step": med * 1e3, "images_per_s": batch / med,
        "min_ms": min(total) * 1e3, "max_ms": max(total) * 1e3,
        "phases_ms": {p: statistics.median(s[p] for s in steps) * 1e3 for p in PHASES},
        "steps_ms": [{k: v * 1e3 for k, v in s.items()} for s in steps],
        "loss_first": losses[0], "loss_last": losses[-1],
    }


def _progress(tag: str, i: int, n_warm: int, s: dict, loss: float) -> None:
    kind = f"warm-up {i + 1}" if i < n_warm else f"step {i - n_warm + 1}"
    phases = " ".join(f"{p} {s[p] * 1e3:7.1f}" for p in PHASES)
    print(f"  {tag:<14} {kind:<10} {s['total'] * 1e3:8.1f} ms  ({phases})  loss {loss:.4f}", flush=True)


def run_interleaved(net_name: str, steppers: dict, batch: int, args) -> tuple[list[dict], dict]:
    """Alternates one step of each framework, so that all see the same machine conditions (a
    shared machine's speed drifts over minutes); returns one summary per framework, and the
    errors of those that failed (torch.compile can), which are dropped from then on."""
    steps = {name: [] for name in steppers}
    losses = {name: [] for name in steppers}
    errors = {}
    for i in range(args.warmup + args.steps):
        for name, (step, _, _) in steppers.items():
            if name in errors:
                continue
            try:
                s, loss = step()
            except Exception as e:  # noqa: BLE001 -- reported, and the others go on
                errors[name] = f"{type(e).__name__}: {e}"[:500]
                print(f"  {name}: FAILED: {errors[name]}", flush=True)
                continue
            _progress(name, i, args.warmup, s, loss)
            if i >= args.warmup:
                steps[name].append(s)
                losses[name].append(loss)
    return [summarise(name, net_name, steps[name], batch, params, losses[name])
            for name, (_, params, _) in steppers.items() if name not in errors], errors


def convnet_profile(net: "convnet.Net", step, work: list[dict], steps: int) -> list[dict]:
    """Per-layer forward and backward ms (mean over `steps` profiled steps), with the work."""
    net._net.set_profiling(True)
    try:
        for _ in range(steps):
            step()
        times = {t["layer"]: t for t in net._net.layer_times()}
    finally:
        net._net.set_profiling(False)
    def per_step(ops: dict) -> dict:
        return {op: {k: o[k] / steps for k in ("ms", "flop", "bytes")} | {"calls": o["calls"] // steps}
                for op, o in ops.items()}

    rows = []
    for w in work:
        t = times.get(w["layer"])
        if t is None:
            continue
        fwd = t["forward_ms"] / max(t["forward_calls"], 1)
        bwd = t["backward_ms"] / max(t["backward_calls"], 1) if t["backward_calls"] else 0.0
        rows.append(dict(w, forward_ms=fwd, backward_ms=bwd, backward_in_producer=t["backward_calls"] == 0,
                         forward_ops=per_step(t["forward_ops"]), backward_ops=per_step(t["backward_ops"])))
    return rows


# --------------------------------------------------------------------------- memory
def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident set now (VmRSS) or at its highest (VmHWM). Not getrusage's
    ru_maxrss: Linux carries that over from the parent through fork and exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(args) -> int:
    """In a fresh process: builds one framework's net, runs one warm-up and two steps, and prints
    its memory as one JSON line (MEMORY {...})."""
    net_name, framework = args.memory_child
    batch = args.batch or DEFAULT_BATCH[net_name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, args.size, args.size), dtype=np.float32)
    y = rng.integers(0, 1000, size=batch).astype(np.int64)
    if convnet is not None:
        convnet.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    baseline = rss_bytes()
    if framework == "convnet":
        step, _, net = convnet_stepper(net_name, x, y, args)
    else:
        step, _, net = torch_stepper(net_name, framework.split("-", 1)[1], x, y, args)
    for _ in range(3):
        step()
    report = {"baseline_bytes": baseline, "peak_bytes": rss_bytes("VmHWM")}
    if framework == "convnet":
        report["host"] = convnet.host_memory_stats()
        report["memory_use"] = net.memory_use()
    print("MEMORY " + json.dumps(report), flush=True)
    return 0


def measure_memory(net_name: str, frameworks: list[str], args) -> dict:
    """Runs memory_child once per framework, each in a fresh process; returns their reports."""
    out = {}
    for fw in frameworks:
        env = dict(os.environ, CONVNET_BENCH_CHILD="convnet" if fw == "convnet" else "torch")
        if net_name.startswith("vgg"):
            env["CONVNET_BENCH_VGG_BLOCKS"] = json.dumps(vgg_blocks(net_name[-1].upper()))
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", net_name, fw, "--size", str(args.size),
               "--threads", str(args.threads)] + (["--batch", str(args.batch)] if args.batch else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("MEMORY ")), None)
        if proc.returncode != 0 or line is None:
            out[fw] = {"error": (proc.stderr or proc.stdout)[-500:]}
            print(f"  memory {fw}: FAILED (exit {proc.returncode}): {out[fw]['error']}", flush=True)
            continue
        out[fw] = json.loads(line[len("MEMORY "):])
        r = out[fw]
        print(f"  memory {fw:<14} peak RSS {r['peak_bytes'] / MIB:8.0f} MiB, "
              f"{(r['peak_bytes'] - r['baseline_bytes']) / MIB:8.0f} MiB above the {r['baseline_bytes'] / MIB:.0f} "
              "MiB before the net", flush=True)
    return out


def memory_by_kind(memory_use: list[dict]) -> dict:
    kinds: dict[str, int] = {}
    for m in memory_use:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + m["bytes"]
    return kinds


# --------------------------------------------------------------------------- report
def _fmt_ms(r: dict | None) -> str:
    return f"{r['ms_per_step']:.0f}" if r else "-"


def speed_table(results: list[dict], flops: dict, peak: dict, info: dict, variants) -> str:
    by_key = {(r["net"], r["framework"]): r for r in results}
    nets = list(dict.fromkeys(r["net"] for r in results))
    torch_cols = [f"torch {v}" for v in variants] if info["torch"] else []
    lines = [
        f"CPU training step, {info['size']}x{info['size']}, {info['threads']} threads, {info['cpu']} "
        f"({info['vector_extensions']}); {info['date'][:10]}; convnet BLAS {info['convnet_blas']}"
        + (f" ({info['openblas'].split(' (')[0]})" if info["openblas"] else "")
        + (f"; torch {info['torch']} (mkldnn {info['torch_mkldnn']})" if info["torch"] else "; torch not run")
        + f"; GEMM peak {peak['peak_gflops']:.0f} GFLOP/s (n={peak['n']}: numpy {peak['numpy_gflops']:.0f}, "
          f"convnet fc {peak['convnet_gflops']:.0f})",
        "",
        "| " + " | ".join(["net", "batch", "GFLOP/step", "convnet ms"] + [f"{c} ms" for c in torch_cols]
                          + (["best torch / convnet"] if torch_cols else [])
                          + ["convnet GFLOP/s", "% of GEMM peak", "best torch % of peak"]) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(torch_cols) + ("---:|" if torch_cols else "") + "---:|---:|---:|",
    ]
    for net in nets:
        c = by_key.get((net, "convnet"))
        ts = [by_key.get((net, f"torch-{v}")) for v in variants] if torch_cols else []
        timed = [t for t in ts if t]
        best = min(timed, key=lambda t: t["ms_per_step"]) if timed else None
        gflop = flops[net] / 1e9
        row = f"| {net} | {c['batch'] if c else '-'} | {gflop:.1f} | {_fmt_ms(c)} | " + "".join(f"{_fmt_ms(t)} | " for t in ts)
        if torch_cols:
            row += (f"{best['ms_per_step'] / c['ms_per_step']:.2f} ({best['framework'][6:]}) | " if best and c else "- | ")
        rate = gflop / (c["ms_per_step"] / 1e3) if c else float("nan")
        row += f"{rate:.0f} | {100 * rate / peak['peak_gflops']:.0f}% | "
        row += (f"{100 * gflop / (best['ms_per_step'] / 1e3) / peak['peak_gflops']:.0f}% |" if best else "- |")
        lines.append(row)
    lines += ["", "(median of the timed steps, the frameworks' steps interleaved; best torch / convnet > 1 means "
              "convnet is faster; GFLOP/step counts conv and fc multiply-adds, forward and backward)"]
    return "\n".join(lines)


def memory_table(memory: dict, variants) -> str:
    kinds = ("parameters", "parameter gradients", "solver state", "activations", "activation gradients",
             "layer buffers", "workspace")
    fws = ["convnet"] + [f"torch-{v}" for v in variants]
    lines = [
        "Peak resident set of a fresh process per framework (MiB): whole, and above the process before the "
        "net was built; convnet's own accounting (Net.memory_use, MiB) after the steps",
        "",
        "| net | " + " | ".join(f"{f} peak (above)" for f in fws) + " | convnet / lowest torch, whole (above) | "
        + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(fws) + "---:|" + "---:|" * len(kinds),
    ]
    for net, per_fw in memory.items():
        cells, torch_whole, torch_above = [], [], []
        for f in fws:
            r = per_fw.get(f)
            if not r or "error" in r:
                cells.append("-")
                continue
            whole, above = r["peak_bytes"] / MIB, (r["peak_bytes"] - r["baseline_bytes"]) / MIB
            cells.append(f"{whole:.0f} ({above:.0f})")
            if f != "convnet":
                torch_whole.append(whole)
                torch_above.append(above)
        c = per_fw.get("convnet", {})
        ratio = "-"
        if "peak_bytes" in c and torch_whole:
            ratio = (f"{c['peak_bytes'] / MIB / min(torch_whole):.2f} "
                     f"({(c['peak_bytes'] - c['baseline_bytes']) / MIB / min(torch_above):.2f})")
        by_kind = memory_by_kind(c.get("memory_use", []))
        lines.append(f"| {net} | " + " | ".join(cells) + f" | {ratio} | "
                     + " | ".join(f"{by_kind.get(k, 0) / MIB:.0f}" for k in kinds) + " |")
    return "\n".join(lines)


def largest_blocks(memory: dict, count: int = 5) -> str:
    lines = []
    for net, per_fw in memory.items():
        use = per_fw.get("convnet", {}).get("memory_use")
        if not use:
            continue
        top = sorted(use, key=lambda m: -m["bytes"])[:count]
        lines.append(f"{net}: " + "; ".join(f"{m['layer'] or '(net)'} {m['what']} {m['bytes'] / MIB:.0f} MiB" for m in top))
    return "Largest blocks convnet holds: " + ("\n" + "\n".join(lines) if lines else "(not measured)")


def profile_table(net: str, rows: list[dict], peak: dict, bandwidth: dict) -> str:
    lines = [
        f"{net}: convnet per layer (mean of the profiled steps); GEMM layers against the {peak['peak_gflops']:.0f} "
        f"GFLOP/s peak, the others' least activation traffic against {bandwidth['gbps']:.1f} GB/s copy bandwidth",
        "",
        "| layer | type | fwd ms | bwd ms | fwd GFLOP/s | bwd GFLOP/s | fwd % peak | bwd % peak | fwd GB/s | bwd GB/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    for r in rows:
        gemm = r["type"] in GEMM_TYPES
        f_rate = r["forward_flop"] / r["forward_ms"] / 1e6 if gemm and r["forward_ms"] > 0 else None
        b_rate = r["backward_flop"] / r["backward_ms"] / 1e6 if gemm and r["backward_ms"] > 0 else None
        f_bw = r["forward_bytes"] / r["forward_ms"] / 1e6 if not gemm and r["forward_ms"] > 0 else None
        b_bw = r["backward_bytes"] / r["backward_ms"] / 1e6 if not gemm and r["backward_ms"] > 0 else None

        def num(v, fmt="{:.0f}"):
            return fmt.format(v) if v is not None else ""

        bwd = "(in producer)" if r["backward_in_producer"] else f"{r['backward_ms']:.1f}"
        lines.append(f"| {r['layer']} | {r['type']} | {r['forward_ms']:.1f} | {bwd} | {num(f_rate)} | {num(b_rate)} | "
                     f"{num(f_rate and 100 * f_rate / peak['peak_gflops'], '{:.0f}%')} | "
                     f"{num(b_rate and 100 * b_rate / peak['peak_gflops'], '{:.0f}%')} | "
                     f"{num(f_bw, '{:.1f}')} | {num(b_bw, '{:.1f}')} |")
    lines.append(f"\n(layers sum to {total:.0f} ms per step; a pool whose LRN goes back through it counts its "
                 "backward in the LRN's)")
    return "\n".join(lines)


# Ops inside a GEMM layer's pass (convnet/op_profile.h), grouped as the table shows them.
MEMORY_OPS = {"im2col": ("im2col",), "col2im": ("col2im",),
              "bias + neuron": ("bias_neuron_forward", "neuron_forward", "neuron_backward", "bias_backward")}


def ops_table(net: str, rows: list[dict], peak: dict, bandwidth: dict) -> str:
    """Where the conv and fc layers' time goes: their GEMMs (GFLOP/s, share of the peak) and the
    memory-bound passes around them (GB/s of their least traffic, share of the copy bandwidth)."""
    head = " | ".join(f"{g} ms (GB/s)" for g in MEMORY_OPS)
    lines = [
        f"{net}: inside the GEMM layers (mean of the profiled steps); GEMMs against the {peak['peak_gflops']:.0f} "
        f"GFLOP/s peak, the passes around them against {bandwidth['gbps']:.1f} GB/s copy bandwidth",
        "",
        f"| layer | pass | ms | GEMM ms | GEMM GFLOP/s | GEMM % peak | {head} | rest ms |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(MEMORY_OPS) + "---:|",
    ]
    totals = {"gemm_ms": 0.0, "gemm_flop": 0.0, "memory_ms": 0.0, "memory_bytes": 0.0, "ms": 0.0}
    for r in rows:
        if r["type"] not in GEMM_TYPES:
            continue
        for pass_name in ("forward", "backward"):
            ops, ms = r[f"{pass_name}_ops"], r[f"{pass_name}_ms"]
            if not ops:
                continue
            gemm = [o for o in ops.values() if o["flop"] > 0]
            g_ms, g_flop = sum(o["ms"] for o in gemm), sum(o["flop"] for o in gemm)
            rate = g_flop / g_ms / 1e6 if g_ms > 0 else 0.0
            cells, accounted = [], g_ms
            for names in MEMORY_OPS.values():
                found = [ops[n] for n in names if n in ops]
                m_ms, m_bytes = sum(o["ms"] for o in found), sum(o["bytes"] for o in found)
                accounted += m_ms
                totals["memory_ms"] += m_ms
                totals["memory_bytes"] += m_bytes
                cells.append(f"{m_ms:.1f} ({m_bytes / m_ms / 1e6:.1f})" if found and m_ms > 0 else "")
            totals["gemm_ms"] += g_ms
            totals["gemm_flop"] += g_flop
            totals["ms"] += ms
            lines.append(f"| {r['layer']} | {'fwd' if pass_name == 'forward' else 'bwd'} | {ms:.1f} | {g_ms:.1f} | {rate:.0f} | "
                         f"{100 * rate / peak['peak_gflops']:.0f}% | " + " | ".join(cells) + f" | {max(ms - accounted, 0):.1f} |")
    if totals["gemm_ms"] > 0:
        g_rate = totals["gemm_flop"] / totals["gemm_ms"] / 1e6
        m_rate = totals["memory_bytes"] / totals["memory_ms"] / 1e6 if totals["memory_ms"] > 0 else 0.0
        lines.append(f"\n(these layers: {totals['ms']:.0f} ms per step; their GEMMs {totals['gemm_ms']:.0f} ms at "
                     f"{g_rate:.0f} GFLOP/s, {100 * g_rate / peak['peak_gflops']:.0f}% of the peak; im2col, col2im, "
                     f"bias and neuron {totals['memory_ms']:.0f} ms at {m_rate:.1f} GB/s, "
                     f"{100 * m_rate / bandwidth['gbps']:.0f}% of the copy bandwidth)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="all", help="all, or a comma list of " + ", ".join(NETS))
    ap.add_argument("--batch", type=int, default=0, help="every net's batch (default: 32 AlexNets, 8 VGGs)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--variants", default=",".join(TORCH_VARIANTS), help="PyTorch configurations to time")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the fresh-process memory runs")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip convnet's per-layer profile")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    ap.add_argument("--memory-child", nargs=2, metavar=("NET", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    nets = NETS if args.nets == "all" else tuple(n.strip() for n in args.nets.split(","))
    bad = [n for n in nets if n not in NETS]
    if bad:
        ap.error(f"--nets: unknown {', '.join(bad)} (choose from {', '.join(NETS)}, or all)")
    args.nets = nets
    args.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    bad = [v for v in args.variants if v not in TORCH_VARIANTS]
    if bad:
        ap.error(f"--variants: unknown {', '.join(bad)} (choose from {', '.join(TORCH_VARIANTS)})")
    if args.steps < 1 or args.batch < 0 or args.threads < 1 or args.warmup < 0:
        ap.error("--steps and --threads must be >= 1, --batch and --warmup >= 0")
    if any(n.startswith("vgg") for n in nets) and args.size % 32:
        ap.error(f"--size {args.size}: the VGGs need a multiple of 32")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    if torch is None:
        args.variants = ()
    convnet.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    info = header(args)
    # The GEMM's side: 2048 reaches a CPU's peak; the test of this script takes less. A shared
    # machine's speed drifts by 10-30% over minutes, so the peak is measured again before every
    # net and the highest counts (once, measured in a slow minute, conv layers ran above it).
    gemm_n = int(os.environ.get("CONVNET_BENCH_GEMM_N", "2048"))
    peaks = []

    def measure_peak() -> dict:
        peaks.append(measure_gemm_peak(gemm_n))
        p = peaks[-1]
        print(f"GEMM peak: {p['peak_gflops']:.0f} GFLOP/s (n={p['n']}: numpy {p['numpy_gflops']:.0f}, "
              f"convnet fc {p['convnet_gflops']:.0f})", flush=True)
        return max(peaks, key=lambda q: q["peak_gflops"])

    peak = measure_peak()
    bandwidth = measure_bandwidth()
    print(f"copy bandwidth {bandwidth['gbps']:.1f} GB/s ({bandwidth['how']})\n", flush=True)

    results, errors, flops, profiles, memory = [], {}, {}, {}, {}
    for net_name in args.nets:
        batch = args.batch or DEFAULT_BATCH[net_name]
        print(f"## {net_name} (batch {batch})", flush=True)
        if net_name != args.nets[0]:
            peak = measure_peak()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 3, args.size, args.size), dtype=np.float32)
        y = rng.integers(0, 1000, size=batch).astype(np.int64)
        steppers = {"convnet": convnet_stepper(net_name, x, y, args)}
        for v in args.variants:
            steppers[f"torch-{v}"] = torch_stepper(net_name, v, x, y, args)
        work = layer_work(steppers["convnet"][2], batch)
        flops[net_name] = sum(w["forward_flop"] + w["backward_flop"] for w in work)
        runs, errs = run_interleaved(net_name, steppers, batch, args)
        errors.update({f"{net_name} {k}": v for k, v in errs.items()})
        for r in runs:
            print(f"  {r['framework']:<14} {r['ms_per_step']:8.1f} ms/step  {r['images_per_s']:7.1f} images/s  "
                  f"{flops[net_name] / 1e6 / r['ms_per_step']:6.0f} GFLOP/s  (min {r['min_ms']:.1f}, "
                  f"max {r['max_ms']:.1f}; {r['parameters']:,} parameters)", flush=True)
        results.extend(runs)
        if args.profile:
            profiles[net_name] = convnet_profile(steppers["convnet"][2], steppers["convnet"][0], work, steps=2)
            print(f"  profiled: {len(profiles[net_name])} layers, "
                  f"{sum(r['forward_ms'] + r['backward_ms'] for r in profiles[net_name]):.0f} ms per step", flush=True)
        steppers.clear()  # free both frameworks' nets before the next
        if args.memory:
            memory[net_name] = measure_memory(net_name, ["convnet"] + [f"torch-{v}" for v in args.variants], args)
        print(flush=True)

    for net_name, rows in profiles.items():  # against the highest peak measured
        print(profile_table(net_name, rows, peak, bandwidth) + "\n")
        print(ops_table(net_name, rows, peak, bandwidth) + "\n")
    print(speed_table(results, flops, peak, info, args.variants))
    if memory:
        print()
        print(memory_table(memory, args.variants))
        print()
        print(largest_blocks(memory))
    if errors:
        print("\nFailed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "gemm_peak": peak, "gemm_peaks": peaks, "bandwidth": bandwidth, "flop_per_step": flops,
                       "results": results, "profiles": profiles, "memory": memory, "errors": errors}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
