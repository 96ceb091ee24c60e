"""The default job, side by side with PyTorch (CPU): the same network (zoo.fashion_alexnet), the
same initialisation rule, SGD rule, schedule, batch size and data normalisation, trained in the
same run. Prints seconds per epoch, total time and final test accuracy of each, and the ratios.

    python3 bench/train_fashion.py [--epochs N] [--threads 2] [--torch-python /opt/torchvenv/bin/python]

PyTorch runs in a subprocess with --torch-python (PyTorch is the yardstick, never a dependency:
install it into a separate venv, `python3 -m venv /opt/torchvenv && /opt/torchvenv/bin/pip install
torch numpy`). Both use `--threads` compute threads; convnet's data pipeline adds 2 loader threads,
PyTorch indexes tensors held in memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------------------------------------
# PyTorch: the same network and training rule (runs under --torch-python).
# ---------------------------------------------------------------------------------------------
def read_idx(path: str) -> np.ndarray:
    # Its own few lines, not convnet.datasets.read_idx: this runs under --torch-python, where
    # convnet is not installed.
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def torch_worker(a) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr = read_idx(f"{FASHION}/train-images-idx3-ubyte.gz").astype(np.float32)
    ytr = read_idx(f"{FASHION}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx(f"{FASHION}/t10k-images-idx3-ubyte.gz").astype(np.float32)
    yte = read_idx(f"{FASHION}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean = float(xtr.mean())  # convnet: of 10,000 evenly spaced images (72.58 vs 72.94)
    norm = lambda x: torch.from_numpy(((x - mean) * a.scale)[:, None])  # noqa: E731
    xtr, xte, ytr, yte = norm(xtr), norm(xte), torch.from_numpy(ytr), torch.from_numpy(yte)
    if a.limit:  # a smoke test of this script, not a measurement
        xtr, ytr, xte, yte = xtr[:a.limit], ytr[:a.limit], xte[:a.limit], yte[:a.limit]

    def conv(cin, cout, k, bias):
        c = nn.Conv2d(cin, cout, k, padding=k // 2)
        nn.init.normal_(c.weight, 0, (2.0 / (cin * k * k)) ** 0.5)  # kaiming, as the zoo's init
        nn.init.constant_(c.bias, bias)
        return c

    def fc(cin, cout, bias, gain=2.0):
        f = nn.Linear(cin, cout)
        nn.init.normal_(f.weight, 0, (gain / cin) ** 0.5)
        nn.init.constant_(f.bias, bias)
        return f

    # convnet's LRN divides by (k + alpha * sum)^beta; PyTorch's by (k + alpha / size * sum)^beta.
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)  # noqa: E731

    class FashionAlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.low = nn.ModuleList([nn.Sequential(
                conv(1, 32, 5, 0), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
                conv(32, 64, 5, 1), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2)) for _ in range(2)])
            self.conv3 = nn.ModuleList([nn.Sequential(conv(128, 96, 3, 0), nn.ReLU(), nn.MaxPool2d(3, 2))
                                        for _ in range(2)])
            self.fc4 = nn.ModuleList([nn.Sequential(fc(2 * 96 * 2 * 2, 256, 1.0), nn.ReLU(), nn.Dropout(0.5))
                                      for _ in range(2)])
            self.fc5 = fc(512, 10, 0.0, gain=1.0)  # xavier, as the zoo's last layer

        def forward(self, x):
            low = torch.cat([t(x) for t in self.low], 1)
            mid = torch.cat([t(low).flatten(1) for t in self.conv3], 1)
            return self.fc5(torch.cat([t(mid) for t in self.fc4], 1))

    net = FashionAlexNet()
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": 5e-4}, {"params": biases, "weight_decay": 0}],
                          lr=a.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    # convnet's linear[tgtFactor=T;warmup=W], restated: at fractional epoch e of E, the rate is
    # lr * ((1 - e/E) + (e/E)/T), times e/W while e < W; set before every step.
    batches = (len(xtr) + a.batch - 1) // a.batch

    def multiplier(e: float) -> float:
        progress = e / a.epochs
        m = (1 - progress) + progress / a.tgt_factor
        return m * e / a.warmup if e < a.warmup else m

    rng = np.random.default_rng(a.seed)
    epochs = []
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        net.train()
        order = torch.from_numpy(rng.permutation(len(xtr)))
        for b, i in enumerate(range(0, len(xtr), a.batch)):
            for g in opt.param_groups:
                g["lr"] = a.lr * multiplier(epoch + b / batches)
            idx = order[i:i + a.batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xte), 500):
                correct += int((net(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum())
        error = 1 - correct / len(xte)
        epochs.append({"epoch_s": time.perf_counter() - t0, "test_accuracy": 1 - error})
        print(f"torch epoch {epoch + 1}: {epochs[-1]['epoch_s']:.1f} s, test accuracy {1 - error:.4f}",
              file=sys.stderr, flush=True)
    return {"framework": f"PyTorch {torch.__version__}", "epochs": epochs}


# ---------------------------------------------------------------------------------------------
# convnet: the default job itself (convnet.demo's settings).
# ---------------------------------------------------------------------------------------------
def convnet_run(a) -> dict:
    import convnet
    from convnet import demo

    convnet.set_num_threads(a.threads)
    epochs = []

    class Record(convnet.Callback):
        def on_epoch(self, e):
            epochs.append({"epoch_s": e["epoch_s"], "test_accuracy": 1 - e["test"]["top1_error"]})
            print(f"convnet epoch {e['epoch']}: {e['epoch_s']:.1f} s, test accuracy "
                  f"{epochs[-1]['test_accuracy']:.4f}", file=sys.stderr, flush=True)

    model = convnet.zoo.fashion_alexnet(lr=a.lr)
    convnet.train(model, convnet.DataPrep("fashion-mnist", scale=a.scale), epochs=a.epochs, batch=a.batch,
                  seed=a.seed, schedule=demo.SCHEDULE, callbacks=[Record()], progress=False)
    return {"framework": f"convnet ({convnet.blas_name()})", "epochs": epochs}


def summary_row(r: dict) -> dict:
    times = [e["epoch_s"] for e in r["epochs"]]
    return {"framework": r["framework"], "s_per_epoch": statistics.median(times), "total_s": sum(times),
            "accuracy": r["epochs"][-1]["test_accuracy"]}


def main() -> int:
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the default job's)")
    ap.add_argument("--threads", type=int, default=2, help="compute threads for both (default 2)")
    ap.add_argument("--torch-python", default="/opt/torchvenv/bin/python",
                    help="a Python with torch installed (default /opt/torchvenv/bin/python)")
    ap.add_argument("--only", choices=["convnet", "torch"], help="run one framework only")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    for name, kind in (("lr", float), ("scale", float), ("batch", int), ("tgt-factor", float), ("warmup", float),
                       ("seed", int)):
        ap.add_argument(f"--{name}", type=kind, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        print(json.dumps(torch_worker(a)))
        return 0

    from convnet import demo
    a.epochs = a.epochs or demo.EPOCHS
    a.lr, a.batch, a.scale, a.seed = demo.LR, demo.BATCH, demo.SCALE, 1
    a.tgt_factor, a.warmup = 100.0, 1.0  # demo.SCHEDULE, restated for the PyTorch side
    assert demo.SCHEDULE == "linear[tgtFactor=100;warmup=1]", "update the PyTorch side"
    print(f"default job, {a.epochs} epochs, batch {a.batch}, lr {a.lr}, {demo.SCHEDULE}, pixels (x - mean) * "
          f"{a.scale:.5f}, {a.threads} threads; "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    if a.only != "torch":
        rows.append(summary_row(convnet_run(a)))
    if a.only != "convnet":
        cmd = [a.torch_python, os.path.abspath(__file__), "--torch-worker", "--epochs", str(a.epochs),
               "--threads", str(a.threads), "--lr", str(a.lr), "--scale", str(a.scale), "--batch", str(a.batch),
               "--tgt-factor", str(a.tgt_factor), "--warmup", str(a.warmup), "--seed", str(a.seed)]
        try:
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            rows.append(summary_row(json.loads(out.strip().splitlines()[-1])))
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"PyTorch not measured ({e})", flush=True)
    print(f"\n| framework | s/epoch (median) | total s | test accuracy |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['framework']} | {r['s_per_epoch']:.1f} | {r['total_s']:.0f} | {r['accuracy']:.4f} |")
    if len(rows) == 2:
        c, t = rows
        print(f"\nPyTorch/convnet time per epoch: {t['s_per_epoch'] / c['s_per_epoch']:.2f}; accuracy "
              f"convnet - PyTorch: {100 * (c['accuracy'] - t['accuracy']):+.2f} points")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
