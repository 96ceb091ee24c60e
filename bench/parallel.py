"""Data parallelism across processes on the CPU: convnet-train under `mpirun -np K` against one
process, the same global batch, the same model and data.

What it measures
    For K = 1 and 2 (or --ranks), `mpirun -np K convnet-train` with --threads 1 per rank trains
    --batches global batches of --batch generated images (the model: configs/fashion_alexnet.json
    at 28x28, 10 classes, unless --model) and reads rank 0's log: images/s over the batches after
    the first two (warm-up), and for K > 1 the part of the gradient all-reduce
    that is left after backward (each bucket's sum starts during backward, as soon as the bucket
    is final; the rest, waiting for the slower rank included, is what this shows). It prints
    images/s, the speed-up over K = 1, the scaling efficiency (speed-up / K) and that unhidden
    all-reduce time's share of a step.

    python3 bench/parallel.py [--binary build/ci/convnet-train] [--ranks 1,2] [--batch 128]

The issue's target on a 2-core machine: 2 ranks of 1 thread at least 1.8x one rank of 1 thread.

Towers at once (--towers)
    One process, AlexNet-2012 (configs/alexnet_2012.json, 3x224x224, two towers on logical
    devices 0 and 1) on one CPU device with --threads 2 against its towers on two CPU devices
    (--device cpu:0,cpu:1) with one thread each, side by side: images/s and the ratio. The
    target: two towers no slower than one device. --trace FILE also writes the two-device run's
    step timeline (Chrome trace JSON).

    python3 bench/parallel.py --towers [--batch 32] [--batches 6]

Replicas in one process (--replicas)
    fashion_alexnet (or --model) with every layer but the inputs replicated over logical
    devices 0 and 1 ("device": [0, 1]) on --device cpu:0,cpu:1 (one thread each) against the
    model unreplicated on one CPU device with --threads 2: images/s and the ratio.

    python3 bench/parallel.py --replicas [--batch 128] [--batches 12]

Projection (--project)
    From AlexNet-2012's measured one-process step time on this machine and its gradient bytes,
    the step time of K data-parallel workers with a ring all-reduce (each worker sends and
    receives 2 (K-1)/K of the bytes; --hidden: the share of that time hidden behind backward)
    for K = 2, 4, 8 over the bandwidths listed, as speed-ups over one worker with the same
    global batch. CPU hosts use the step time measured here; GPUs take --gpu-step-ms (no GPU
    has been measured yet: the figure is an assumption, printed as such). Krizhevsky 2014
    reports 6.25x on 8 GPUs for the hybrid, whose fc layers are not all-reduced.

    python3 bench/parallel.py --project [--hidden 0.9] [--gpu-step-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(binary: str, ranks: int, model: str, batch: int, batches: int, size: int, channels: int,
        device: str = "cpu", threads: int = 1, extra: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as work:
        data = f"generated[count={batch * batches};classes=10;channels={channels};size={size};seed=3]"
        cmd = [binary, "--layer-def", model, "--data", data, "--batch", str(batch), "--epochs", "1",
               "--threads", str(threads), "--device", device, "--workers", "1", "--quiet",
               "--log", os.path.join(work, "log.jsonl"), "--scale", "1", "--mean", "none", *(extra or [])]
        if ranks > 1:
            env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "core", *cmd]
        else:
            env = dict(os.environ)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"parallel.py: {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
        events = [json.loads(line) for line in open(os.path.join(work, "log.jsonl"))]
    steps = [e for e in events if e["event"] == "batch"]
    # Per-step wall time from the log's elapsed times; the first two steps are warm-up.
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steps[1:], steps[2:])]
    step_s = statistics.median(times)
    allreduce = statistics.median([s["allreduce_s"] for s in steps[2:]]) if ranks > 1 else 0.0
    return {"ranks": ranks, "device": device, "threads": threads, "step_s": step_s,
            "images_per_s": batch / step_s, "allreduce_s": allreduce}


def towers(a: argparse.Namespace) -> list[dict]:
    model = os.path.join(ROOT, "configs", "alexnet_2012.json")
    one = run(a.binary, 1, model, a.batch, a.batches, 224, 3, device="cpu", threads=2)
    trace = ["--trace", os.path.abspath(a.trace)] if a.trace else []
    two = run(a.binary, 1, model, a.batch, a.batches, 224, 3, device="cpu:0,cpu:1", threads=2, extra=trace)
    print_against_one(a, "alexnet_2012.json", one, two, "cpu:0,cpu:1 (1 thread each)")
    return [one, two]


def print_against_one(a: argparse.Namespace, model: str, one: dict, two: dict, two_label: str) -> None:
    """One device with 2 threads against two devices: ms/step, images/s, their ratio."""
    print(f"{model}, batch {a.batch}, {os.cpu_count()} cores, median of {a.batches - 2} steps")
    width = max(len(two_label), 15)
    print(f"{'devices':>{width}} {'ms/step':>9} {'images/s':>9} {'ratio':>6}")
    for r, what in ((one, "cpu (2 threads)"), (two, two_label)):
        print(f"{what:>{width}} {1000 * r['step_s']:>9.1f} {r['images_per_s']:>9.2f} "
              f"{r['images_per_s'] / one['images_per_s']:>6.2f}")


def replicas(a: argparse.Namespace) -> list[dict]:
    with open(a.model) as f:
        spec = json.load(f)
    for layer in spec["layers"]:
        if layer["type"] not in ("input", "labels"):
            layer["device"] = [0, 1]
    with tempfile.TemporaryDirectory() as work:
        replicated = os.path.join(work, "replicated.json")
        with open(replicated, "w") as f:
            json.dump(spec, f)
        one = run(a.binary, 1, a.model, a.batch, a.batches, a.size, a.channels, device="cpu", threads=2)
        two = run(a.binary, 1, replicated, a.batch, a.batches, a.size, a.channels, device="cpu:0,cpu:1", threads=2)
    print_against_one(a, os.path.basename(a.model), one, two, "2 replicas on cpu:0,cpu:1 (1 each)")
    return [one, two]


def ring_allreduce_s(workers: int, nbytes: float, bytes_per_s: float) -> float:
    """Time of a ring all-reduce of nbytes over `workers`: each sends 2 (K-1)/K of the bytes."""
    return 2 * (workers - 1) / workers * nbytes / bytes_per_s


def project(a: argparse.Namespace) -> dict:
    model = os.path.join(ROOT, "configs", "alexnet_2012.json")
    measured = run(a.binary, 1, model, a.batch, a.batches, 224, 3, device="cpu", threads=os.cpu_count() or 1)
    params = 60_965_224  # AlexNet-2012's parameters (tests/cpp/test_net.cpp checks the count)
    nbytes = 4.0 * params
    links = [("10 Gb/s Ethernet", 10e9 / 8), ("100 Gb/s InfiniBand", 100e9 / 8),
             ("NVLink 4 (H100, ~450 GB/s per direction)", 450e9)]
    rows = []
    print(f"AlexNet-2012, {params} parameters = {nbytes / 1e6:.0f} MB of gradients per step; "
          f"share hidden behind backward assumed {a.hidden:.0%}")
    for label, step_s in ((f"CPU host (measured here, batch {a.batch})", measured["step_s"]),
                          (f"GPU (ASSUMED {a.gpu_step_ms:.0f} ms/step; not measured)", a.gpu_step_ms / 1000)):
        print(f"\n{label}: one worker {1000 * step_s:.1f} ms/step")
        print(f"{'link':>42} " + " ".join(f"{'K=' + str(k):>8}" for k in (2, 4, 8)))
        for name, bw in links:
            speedups = []
            for k in (2, 4, 8):
                exposed = (1 - a.hidden) * ring_allreduce_s(k, nbytes, bw)
                speedups.append(step_s / (step_s / k + exposed))
            rows.append({"worker": label, "link": name, "speedups": speedups})
            print(f"{name:>42} " + " ".join(f"{x:>7.2f}x" for x in speedups))
    print("\nKrizhevsky 2014 (the hybrid, 8 GPUs): 6.25x")
    return {"measured_step_s": measured["step_s"], "rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "ci", "convnet-train"))
    p.add_argument("--model", default=os.path.join(ROOT, "configs", "fashion_alexnet.json"))
    p.add_argument("--size", type=int, default=28, help="the model's input side (default 28)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--ranks", default="1,2", help="process counts to compare (default 1,2)")
    p.add_argument("--batch", type=int, default=128, help="the global batch (default 128)")
    p.add_argument("--batches", type=int, default=12, help="global batches per run (default 12)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--towers", action="store_true", help="AlexNet-2012's towers side by side against one device")
    p.add_argument("--trace", help="with --towers: the two-device run's step timeline (Chrome trace JSON)")
    p.add_argument("--replicas", action="store_true", help="2 replicas in one process against one device")
    p.add_argument("--project", action="store_true", help="project AlexNet-2012 to 2, 4, 8 workers")
    p.add_argument("--hidden", type=float, default=0.9,
                   help="with --project: share of the all-reduce hidden behind backward (default 0.9)")
    p.add_argument("--gpu-step-ms", type=float, default=100.0,
                   help="with --project: the ASSUMED one-GPU step time in ms (default 100)")
    a = p.parse_args()
    if not os.path.isfile(a.binary):
        sys.exit(f"parallel.py: {a.binary} not found: build it (cmake --build build/ci)")
    mode = towers if a.towers else replicas if a.replicas else project if a.project else None
    if mode:
        results = mode(a)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    results = [run(a.binary, int(k), a.model, a.batch, a.batches, a.size, a.channels) for k in a.ranks.split(",")]
    base = results[0]["images_per_s"] * 1 / results[0]["ranks"]
    print(f"{os.path.basename(a.model)}, global batch {a.batch}, 1 thread per rank, {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'ms/step':>9} {'images/s':>9} {'speed-up':>9} {'efficiency':>10} {'all-reduce ms':>14} {'share':>6}")
    for r in results:
        speedup = r["images_per_s"] / (base * 1)
        print(f"{r['ranks']:>5} {1000 * r['step_s']:>9.1f} {r['images_per_s']:>9.1f} {speedup:>9.2f} "
              f"{speedup / r['ranks']:>10.2f} {1000 * r['allreduce_s']:>14.2f} {r['allreduce_s'] / r['step_s']:>6.1%}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
