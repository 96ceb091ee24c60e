"""GPU training-step benchmark: convnet against PyTorch (cuDNN) on AlexNet.

What it measures
    One training step -- forward (training mode, dropout on, softmax cross-entropy), backward,
    and the SGD update (momentum 0.9, weight decay 5e-4, learning rate ``--lr``, default 0.001
    rather than the paper's 0.01 so that some fifty steps on one repeated batch stay finite; the
    update's work does not depend on it) -- on one fixed random float32 batch (default
    128 x 3 x 224 x 224, 1000 classes) already on the GPU, for

    * ``onetower``: the one-tower "one weird trick" AlexNet, ``convnet.zoo.alexnet_one_tower``;
    * ``alexnet2012``: the two-tower network of Krizhevsky et al. (2012), ``convnet.zoo.alexnet_2012``,
      both towers on cuda:0, one stream (``devices="cuda:0"``);
    * ``alexnet2012_lanes``: the same net with each tower on a lane of its own of cuda:0 (a stream
      and host thread each, ``devices=["cuda:0", "cuda:0"]``): the towers side by side on one card.
      A CUDA graph captures one lane, so this net has no graph step.

    The PyTorch twins are bench/cpu_alexnet.py's (towers as convolution groups, the paper's LRN as
    ``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``, the same initialisation scheme),
    moved to cuda:0, with ``torch.backends.cudnn.benchmark = True`` and torch's default SGD (its
    multi-tensor "foreach" form on CUDA).

    Precision modes (``--math``, default both): ``fp32`` -- convnet ``Net(math="fp32")``; torch with
    TF32 off for matrix products and cuDNN convolutions; ``tf32`` -- convnet ``Net(math="tf32")``;
    torch with TF32 on for both. Torch >= 2.9 takes these through
    ``torch.backends.cuda.matmul.fp32_precision`` and ``torch.backends.cudnn.conv.fp32_precision``
    ("ieee" / "tf32"); older torch through ``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` (the two APIs must not be mixed in one process: newer torch
    raises when a flag set through one is read through the other).

    Timing: wall clock (time.perf_counter) around work that is complete on the GPU -- each timed
    region starts after a synchronise and ends with one (``convnet.cuda_synchronize(0)``,
    ``torch.cuda.synchronize()``) -- for both frameworks alike, so launch overhead counts as it does
    in a real training loop. Two kinds of timed run, after ``--warmup`` untimed rounds:

    * phases: ``forward`` (convnet's forward returns the cost statistics to the host, so it ends
      synchronised anyway; torch: model + loss, then synchronise), ``backward``, ``update``
      (torch: ``optimizer.step()`` + ``zero_grad``), each followed by a synchronise; and ``input``,
      the upload of the NCHW numpy batch: convnet ``set_batch`` (NCHW -> CHWN on the host, then
      the copy), torch ``torch.from_numpy(x).to("cuda")``; and ``upload``, what a training loop
      pays per batch: convnet a ``data.Pipeline(..., pinned=True)`` batch (CHWN, page-locked) fed
      with ``set_batch``, torch a ``pin_memory()`` tensor (as DataLoader's ``pin_memory=True``
      gives) copied with ``.to("cuda", non_blocking=True)``;
    * step: forward + backward + update with no synchronise in between and one at the end -- the
      number to compare (images/s = batch / step time). The input is not part of it.
    * graph step (convnet): the same step with forward and backward replayed from a captured CUDA
      graph (``Net.cuda_graph``; the first such round runs eagerly and the second captures: with
      ``--warmup`` >= 2 neither is timed); torch's eager step is its twin in the ratio.

    Each round runs a convnet phases run, a torch phases run, a convnet step, a torch step and a
    convnet graph step, so drift in the card's clocks falls on both alike; every figure is the
    median over ``--steps`` rounds. Peak memory: convnet ``cuda_memory_stats(0)["peak_bytes"]`` after ``cuda_reset_peak(0)``
    before the net is built (bytes held by live tensors at the worst moment, cuBLAS's 32 MiB
    workspace included: it comes from the same allocator), torch ``torch.cuda.max_memory_allocated()`` after
    ``torch.cuda.reset_peak_memory_stats()`` before the model is built (cuDNN workspaces included).

How to run
    With a Python that imports convnet (built with CUDA) and, to compare, torch with CUDA::

        python bench/gpu_alexnet.py                       # all three nets, fp32 and tf32, batch 128
        python bench/gpu_alexnet.py --math fp32 --nets onetower --steps 10 --json /tmp/a.json

    Options: --batch (128), --size (224), --steps (20), --warmup (5), --math (fp32,tf32),
    --nets (all | both | onetower | alexnet2012 | alexnet2012_lanes; both: the first two), --lr (0.001), --profile (convnet's per-layer times
    too), --budget-s S (fit in S seconds: fewer timed rounds, at least 3, when time runs short),
    --json PATH (rewritten after each configuration). SIGTERM (e.g. from `timeout`) ends the run
    with the table of what was measured.
    Without a GPU it says so and exits 0; without torch (or torch without CUDA) it times convnet
    alone. It exits 1 when convnet failed in some configuration (the others still run). The
    markdown table printed at the end is meant for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings

import numpy as np

import convnet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_alexnet as twins  # noqa: E402  (the PyTorch twins, their init, the SGD settings)

try:
    import torch
    from torch import nn
except ImportError:  # PyTorch is optional: without it only convnet is timed
    torch = None

PHASES = ("input", "upload", "forward", "backward", "update")
NETS = ("onetower", "alexnet2012", "alexnet2012_lanes")
MODES = ("fp32", "tf32")
MIB = 1 << 20
MIN_TIMED = 3  # timed rounds kept even when the time budget runs out


class Interrupted(BaseException):
    """SIGTERM: stop timing, report what was measured."""


def _on_sigterm(signum, frame):
    raise Interrupted()


# --------------------------------------------------------------------------- environment
def no_gpu_reason() -> str | None:
    if not convnet.cuda_compiled():
        return "this convnet build has no CUDA backend (nvcc was not found when it was built)"
    if convnet.cuda_device_count() == 0:
        return "no CUDA device visible (convnet.cuda_device_count() == 0)"
    return None


def torch_cuda_reason() -> str | None:
    if torch is None:
        return "torch is not importable in this Python"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    return None


def nvidia_smi() -> dict:
    fields = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    return dict(zip(fields.split(","), (v.strip() for v in out[0].split(","))))


def header(args, torch_reason) -> dict:
    smi = nvidia_smi()
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "gpu": smi.get("name") or (torch.cuda.get_device_name(0) if torch_reason is None else "unknown"),
        "nvidia_smi": smi,
        "cuda_devices": convnet.cuda_device_count(),
        "cpu": twins.cpu_model(),
        "python": platform.python_version(),
        "convnet": convnet.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "torch_cuda": torch.version.cuda if torch is not None else None,
        "cudnn": torch.backends.cudnn.version() if torch_reason is None else None,
        "torch_skipped": torch_reason,
        "batch": args.batch, "size": args.size, "warmup": args.warmup, "steps": args.steps,
        "math": args.math, "lr": args.lr, "timing": "wall clock between device synchronisations, median of the timed rounds",
    }
    print(f"# convnet vs PyTorch: AlexNet training step on the GPU  ({info['date']})")
    print(f"gpu      : {info['gpu']} ({info['cuda_devices']} visible to convnet)"
          + (f", driver {smi['driver_version']}, {smi['memory.total']}, SM clock {smi['clocks.sm']} "
             f"(max {smi['clocks.max.sm']})" if smi else ""))
    print(f"convnet  : {info['convnet']}, python {info['python']}, host {info['cpu']}")
    if torch_reason is None:
        print(f"torch    : {info['torch']} (CUDA {info['torch_cuda']}, cuDNN {info['cudnn']}), "
              "cudnn.benchmark on, default SGD (foreach)")
    else:
        print(f"torch    : {torch_reason} -- timing convnet only")
    print(f"batch    : {args.batch} x 3 x {args.size} x {args.size}, float32, 1000 classes; math {', '.join(args.math)}; "
          f"{args.warmup} warm-up + {args.steps} timed rounds; medians of wall-clock time between synchronisations")
    print(flush=True)
    return info


def set_torch_math(mode: str) -> dict:
    """TF32 off (fp32) or on (tf32) for torch's matrix products and cuDNN convolutions."""
    tf32 = mode == "tf32"
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = "tf32" if tf32 else "ieee"
        conv.fp32_precision = "tf32" if tf32 else "ieee"
        return {"matmul.fp32_precision": matmul.fp32_precision, "cudnn.conv.fp32_precision": conv.fp32_precision}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        return {"matmul.allow_tf32": matmul.allow_tf32, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}


# --------------------------------------------------------------------------- the two frameworks
class ConvnetRunner:
    name = "convnet"

    def __init__(self, net_name, x, y, args, mode):
        gc.collect()
        convnet.cuda_synchronize(0)
        convnet.cuda_reset_peak(0)
        if net_name.startswith("alexnet2012"):
            lanes = net_name == "alexnet2012_lanes"
            model = convnet.zoo.alexnet_2012(classes=1000, size=args.size)
            devices = ["cuda:0", "cuda:0"] if lanes else "cuda:0"
        else:
            model, devices = convnet.zoo.alexnet_one_tower(classes=1000, size=args.size), "cuda:0"
        self.net = convnet.Net(model, devices=devices, seed=1, math=mode)
        self.lr_scale = args.lr / convnet.zoo.PAPER_SGD["epsW"]  # the zoo's nets learn at epsW = 0.01
        self.math = self.net.math
        self.params = self.net.parameter_count
        self.x, self.y = x, y
        # What a training loop uploads: a pipeline batch, already CHWN, in page-locked memory
        # (the same values: no crop, mean 0, scale 1).
        pipe = convnet.data.Pipeline(convnet.data.array_source(x, y, 1000), batch=len(x), shuffle=False,
                                     train=False, mirror=False, pinned=True, workers=1, prefetch=1)
        self.pinned_batch = next(pipe.epoch())
        self.feed = (self.net.inputs[0], self.net.label_inputs[0])
        self.net.set_batch(x, y)
        # forward()/backward() stay eager; forward_backward() replays the captured graph (one
        # lane only).
        self.has_graph = net_name != "alexnet2012_lanes"
        self.net.cuda_graph = self.has_graph
        convnet.cuda_synchronize(0)

    def phases(self):
        sync, clock, net = convnet.cuda_synchronize, time.perf_counter, self.net
        sync(0)
        t0 = clock()
        net.set_batch(self.x, self.y)
        sync(0)
        t1 = clock()
        net._net.set_batch(self.pinned_batch, *self.feed)
        sync(0)
        t2 = clock()
        stats = net._net.forward(True)  # returns host statistics: ends synchronised
        t3 = clock()
        net.backward()
        sync(0)
        t4 = clock()
        net.update(self.lr_scale)
        sync(0)
        t5 = clock()
        return {"input": t1 - t0, "upload": t2 - t1, "forward": t3 - t2, "backward": t4 - t3,
                "update": t5 - t4}, float(stats["objective"])

    def step(self):
        sync, clock, net = convnet.cuda_synchronize, time.perf_counter, self.net
        sync(0)
        t0 = clock()
        stats = net._net.forward(True)
        net.backward()
        net.update(self.lr_scale)
        sync(0)
        return clock() - t0, float(stats["objective"])

    def graph_step(self):
        """The same step with forward and backward replayed from a CUDA graph (the first call
        runs eagerly, the second captures)."""
        sync, clock, net = convnet.cuda_synchronize, time.perf_counter, self.net
        sync(0)
        t0 = clock()
        stats = net._net.forward_backward()
        net.update(self.lr_scale)
        sync(0)
        return clock() - t0, float(stats["objective"])

    def peak_bytes(self):
        return convnet.cuda_memory_stats(0)["peak_bytes"]

    def profile(self, rounds=3):
        """convnet's per-layer times (its own profiler), summed over a few training steps."""
        if not hasattr(self.net._net, "set_profiling"):
            return None
        self.net._net.set_profiling(True)
        try:
            for _ in range(rounds):
                self.phases()
            return self.net._net.layer_times()
        finally:
            self.net._net.set_profiling(False)

    def close(self):
        del self.net
        gc.collect()


class TorchRunner:
    name = "torch"

    def __init__(self, net_name, x, y, args, mode):
        self.dev = torch.device("cuda:0")
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.math_flags = set_torch_math(mode)
        torch.backends.cudnn.benchmark = True
        torch.manual_seed(1)
        build = twins.torch_alexnet2012 if net_name.startswith("alexnet2012") else twins.torch_onetower
        model = build(1000, args.size)
        twins.torch_init_like_convnet(model, twins.ZOO_BIASES)
        self.model = model.to(self.dev).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=twins.MOMENTUM,
                                   weight_decay=twins.WEIGHT_DECAY)
        self.loss_fn = nn.CrossEntropyLoss()
        self.params = sum(p.numel() for p in self.model.parameters())
        self.x_host, self.y_host = x, y
        self.x = torch.from_numpy(x).to(self.dev)
        self.y = torch.from_numpy(y).to(self.dev)
        self.x_pinned, self.y_pinned = torch.from_numpy(x).pin_memory(), torch.from_numpy(y).pin_memory()
        torch.cuda.synchronize()

    def phases(self):
        sync, clock = torch.cuda.synchronize, time.perf_counter
        sync()
        t0 = clock()
        x = torch.from_numpy(self.x_host).to(self.dev)
        sync()
        t1 = clock()
        x = self.x_pinned.to(self.dev, non_blocking=True)
        y = self.y_pinned.to(self.dev, non_blocking=True)
        sync()
        t2 = clock()
        loss = self.loss_fn(self.model(x), y)
        sync()
        t3 = clock()
        loss.backward()
        sync()
        t4 = clock()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync()
        t5 = clock()
        return {"input": t1 - t0, "upload": t2 - t1, "forward": t3 - t2, "backward": t4 - t3,
                "update": t5 - t4}, float(loss.detach())

    def step(self):
        sync, clock = torch.cuda.synchronize, time.perf_counter
        sync()
        t0 = clock()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync()
        return clock() - t0, float(loss.detach())

    def peak_bytes(self):
        return torch.cuda.max_memory_allocated(self.dev)

    def close(self):
        del self.model, self.opt, self.x, self.y, self.x_pinned, self.y_pinned
        gc.collect()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- timing
def run_config(net_name, mode, x, y, args, use_torch, deadline=None):
    """Builds both frameworks' nets, times them interleaved; returns (results, errors). Past
    `deadline` (time.monotonic()), stops after MIN_TIMED timed rounds."""
    runners, errors = {}, []
    try:
        runners["convnet"] = ConvnetRunner(net_name, x, y, args, mode)
    except Exception as e:  # noqa: BLE001 -- record, time torch anyway, report at the end
        errors.append({"net": net_name, "math": mode, "where": "convnet: building the net",
                       "error": f"{type(e).__name__}: {e}"})
        print(f"  convnet  FAILED to build the net: {type(e).__name__}: {e}", flush=True)
    if use_torch:
        runners["torch"] = TorchRunner(net_name, x, y, args, mode)
        print(f"  torch math flags: {runners['torch'].math_flags}", flush=True)
    if "convnet" in runners:
        print(f"  convnet  net.math = {runners['convnet'].math!r}", flush=True)

    rec = {n: {"phases": [], "step": [], "graph": [], "loss": []} for n in runners}
    graph_ok = {n: getattr(r, "has_graph", False) for n, r in runners.items()}
    for i in range(args.warmup + args.steps):
        timed = i >= args.warmup
        if deadline is not None and time.monotonic() > deadline and i - args.warmup >= MIN_TIMED:
            print(f"  (time budget: stopping after {i - args.warmup} timed rounds)", flush=True)
            break
        for kind in ("phases", "step", "graph"):
            for name in list(runners):
                r = runners[name]
                if kind == "graph" and not graph_ok[name]:
                    continue
                try:
                    if kind == "phases":
                        s, loss = r.phases()
                        line = " ".join(f"{p} {s[p] * 1e3:7.2f}" for p in PHASES)
                    elif kind == "step":
                        s, loss = r.step()
                        line = f"step {s * 1e3:8.2f}"
                    else:
                        s, loss = r.graph_step()
                        line = f"step {s * 1e3:8.2f}"
                except Exception as e:  # noqa: BLE001
                    if kind == "graph":  # the eager figures still count: stop only the graph runs
                        errors.append({"net": net_name, "math": mode, "where": f"{name}: graph round {i + 1}",
                                       "error": f"{type(e).__name__}: {e}"})
                        print(f"  {name:<8} graph step FAILED in round {i + 1}: {type(e).__name__}: {e}", flush=True)
                        traceback.print_exc()
                        graph_ok[name] = False
                        continue
                    errors.append({"net": net_name, "math": mode, "where": f"{name}: {kind} round {i + 1}",
                                   "error": f"{type(e).__name__}: {e}"})
                    print(f"  {name:<8} FAILED in round {i + 1} ({kind}): {type(e).__name__}: {e}", flush=True)
                    traceback.print_exc()
                    runners.pop(name).close()
                    continue
                if not math.isfinite(loss):
                    print(f"  {name:<8} WARNING: non-finite loss {loss} in round {i + 1}", flush=True)
                tag = f"warm-up {i + 1}" if not timed else f"round {i - args.warmup + 1}"
                print(f"  {name:<8} {tag:<10} {kind:<6} {line}  (ms)  loss {loss:.4f}", flush=True)
                if timed:
                    rec[name][kind].append(s)
                    rec[name]["loss"].append(loss)

    results = []
    for name, r in runners.items():
        d = rec[name]
        if not d["step"]:
            continue
        step = statistics.median(d["step"])
        res = {
            "net": net_name, "math": mode, "framework": name, "parameters": r.params,
            "step_ms": step * 1e3, "images_per_s": args.batch / step,
            "step_min_ms": min(d["step"]) * 1e3, "step_max_ms": max(d["step"]) * 1e3,
            "phases_ms": {p: statistics.median(s[p] for s in d["phases"]) * 1e3 for p in PHASES},
            "steps_ms": [s * 1e3 for s in d["step"]],
            "peak_mib": r.peak_bytes() / MIB,
            "loss_first": d["loss"][0], "loss_last": d["loss"][-1],
        }
        if d["graph"]:
            res["graph_step_ms"] = statistics.median(d["graph"]) * 1e3
            res["graph_nodes"] = r.net.cuda_graph_nodes
        if name == "convnet":
            res["net_math"] = r.math
            if args.profile:
                try:
                    res["layer_times"] = r.profile()
                except Exception as e:  # noqa: BLE001
                    res["layer_times"] = None
                    print(f"  convnet profiling failed: {type(e).__name__}: {e}", flush=True)
        else:
            res["torch_math_flags"] = r.math_flags
        results.append(res)
    for r in runners.values():
        r.close()
    return results, errors


def print_config(results):
    by = {r["framework"]: r for r in results}
    for r in results:
        ph = r["phases_ms"]
        print(f"  {r['framework']:<8} step {r['step_ms']:8.2f} ms  {r['images_per_s']:8.1f} images/s  "
              f"(min {r['step_min_ms']:.2f}, max {r['step_max_ms']:.2f}); forward {ph['forward']:.2f}, "
              f"backward {ph['backward']:.2f}, update {ph['update']:.2f}, input {ph['input']:.2f}, "
              f"upload {ph['upload']:.2f} ms; "
              f"peak {r['peak_mib']:.0f} MiB; {r['parameters']:,} parameters", flush=True)
        if "graph_step_ms" in r:
            print(f"  {r['framework']:<8} step from a CUDA graph {r['graph_step_ms']:8.2f} ms "
                  f"({r['graph_nodes']} nodes)", flush=True)
    if "convnet" in by and "torch" in by:
        c, t = by["convnet"], by["torch"]
        print("  torch / convnet: step {:.2f}, forward {:.2f}, backward {:.2f}, update {:.2f}".format(
            t["step_ms"] / c["step_ms"],
            *(t["phases_ms"][p] / c["phases_ms"][p] for p in ("forward", "backward", "update"))), flush=True)
        if "graph_step_ms" in c:
            print(f"  torch / convnet (graph step): {t['step_ms'] / c['graph_step_ms']:.2f}", flush=True)
    c = by.get("convnet")
    if c and c.get("layer_times"):
        rows = sorted(c["layer_times"], key=lambda t: -(t["forward_ms"] + t["backward_ms"]))
        total = sum(t["forward_ms"] + t["backward_ms"] for t in rows) or 1.0
        print("  convnet per-layer time (its profiler, summed over 3 steps): layer, forward ms, backward ms, share")
        for t in rows[:12]:
            print(f"    {t['layer']:<10} {t['forward_ms']:9.2f} {t['backward_ms']:9.2f}  "
                  f"{(t['forward_ms'] + t['backward_ms']) / total:6.1%}")
    print(flush=True)


# --------------------------------------------------------------------------- report
def markdown(results, info) -> str:
    by_key = {(r["net"], r["math"], r["framework"]): r for r in results}
    lines = [
        f"GPU training step, batch {info['batch']}, {info['size']}x{info['size']}, {info['gpu']}; "
        f"{info['date'][:10]}"
        + (f"; torch {info['torch']} (cuDNN {info['cudnn']}, benchmark on)" if not info["torch_skipped"]
           else "; torch not run"),
        "",
        "| net | math | framework | step ms | graph step ms | images/s | forward | backward | update | input "
        "| upload | peak MiB | torch / convnet: step | graph step | forward | backward |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ph = r["phases_ms"]
        ratios = ["", "", "", ""]
        t = by_key.get((r["net"], r["math"], "torch"))
        graph = r.get("graph_step_ms")
        if r["framework"] == "convnet" and t:
            ratios = [f"{t['step_ms'] / r['step_ms']:.2f}", f"{t['step_ms'] / graph:.2f}" if graph else "",
                      f"{t['phases_ms']['forward'] / ph['forward']:.2f}",
                      f"{t['phases_ms']['backward'] / ph['backward']:.2f}"]
        lines.append(f"| {r['net']} | {r['math']} | {r['framework']} | {r['step_ms']:.1f} | "
                     f"{f'{graph:.1f}' if graph else ''} | {r['images_per_s']:.0f} | "
                     f"{ph['forward']:.1f} | {ph['backward']:.1f} | {ph['update']:.2f} | {ph['input']:.1f} | {ph['upload']:.1f} | "
                     f"{r['peak_mib']:.0f} | " + " | ".join(ratios) + " |")
    lines.append("")
    lines.append("(ms, medians of the timed rounds, the frameworks interleaved; wall clock between device "
                 "synchronisations; step = forward + backward + update on a batch already on the GPU, with no "
                 "synchronisation inside; graph step = the same with forward and backward replayed from a "
                 "CUDA graph (convnet's cuda_graph; torch eager); input = upload of the NCHW numpy batch, "
                 "upload = of a page-locked training batch (convnet: a pinned pipeline batch; torch: a "
                 "pin_memory() tensor), neither part of the step; "
                 "torch / convnet > 1 means convnet is faster)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    ap.add_argument("--math", default="fp32,tf32", help="comma-separated precision modes: fp32, tf32")
    ap.add_argument("--nets", choices=("all", "both") + NETS, default="all")
    ap.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (both frameworks)")
    ap.add_argument("--profile", action="store_true", help="print convnet's per-layer times too")
    ap.add_argument("--budget-s", type=float, default=None, metavar="S",
                    help="fit the whole run in about S seconds (fewer timed rounds if need be)")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    args = ap.parse_args(argv)
    args.math = [m.strip() for m in args.math.split(",") if m.strip()]
    if not args.math or any(m not in MODES for m in args.math):
        ap.error(f"--math takes a comma-separated list of {', '.join(MODES)}")
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        ap.error("--steps and --batch must be >= 1, --warmup >= 0")

    reason = no_gpu_reason()
    if reason:
        print(f"no GPU: {reason} -- nothing to time (bench/gpu_alexnet.py needs a CUDA build of convnet "
              "and a GPU)", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"skipped": f"no GPU: {reason}"}, f, indent=2)
        return 0
    torch_reason = torch_cuda_reason()
    info = header(args, torch_reason)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
    y = rng.integers(0, 1000, size=args.batch).astype(np.int64)

    def write_json(partial):
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"info": info, "results": results, "errors": errors, "partial": partial},
                          f, indent=2, default=str)

    results, errors = [], []
    nets = {"all": NETS, "both": NETS[:2]}.get(args.nets, (args.nets,))
    configs = [(mode, net) for mode in args.math for net in nets]
    end = time.monotonic() + args.budget_s if args.budget_s else None
    interrupted = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for k, (mode, net_name) in enumerate(configs):
            print(f"## {net_name}, {mode}", flush=True)
            deadline = None
            if end is not None:
                deadline = time.monotonic() + (end - time.monotonic()) / (len(configs) - k)
            res, err = run_config(net_name, mode, x, y, args, torch_reason is None, deadline)
            print_config(res)
            results.extend(res)
            errors.extend(err)
            write_json(partial=k + 1 < len(configs))
    except Interrupted:
        interrupted = True
        print("\nINTERRUPTED (SIGTERM): the table holds the configurations finished before it", flush=True)
        write_json(partial=True)

    print(markdown(results, info))
    if errors:
        print(f"\n{len(errors)} error(s):")
        for e in errors:
            print(f"  {e['net']} {e['math']} {e['where']}: {e['error']}")
    if args.json:
        print(f"\nwrote {args.json}")
    return 3 if interrupted else 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
