"""The default job: train the AlexNet-style model for 28x28 images (zoo.fashion_alexnet) on
Fashion-MNIST on the CPU, with progress, and report test accuracy.

    python3 -m convnet.demo [--epochs 2] [--batch 128] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import datasets, zoo
from ._core import blas_name, num_threads, set_num_threads
from .net import Net


def evaluate(net: Net, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        p = net.predict(x[i:i + batch])
        correct += int((p.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2, help="passes over the 60,000 training images (default 2)")
    ap.add_argument("--batch", type=int, default=128, help="minibatch size (default 128, as the paper)")
    ap.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01, as the paper)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=datasets.FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX files")
    args = ap.parse_args(argv)

    if args.threads:
        set_num_threads(args.threads)
    train_x, train_y, test_x, test_y = datasets.fashion_mnist(args.data)
    mean = float(train_x.mean())
    train_x, test_x = train_x - mean, test_x - mean  # scalar mean subtraction
    net = Net(zoo.fashion_alexnet(lr=args.lr), devices="cpu", seed=args.seed)
    print(f"convnet demo: fashion_alexnet ({net.parameter_count:,} parameters), "
          f"{len(train_x):,} training and {len(test_x):,} test images, batch {args.batch}, "
          f"{args.epochs} epoch(s), {num_threads()} thread(s), {blas_name()}", flush=True)
    rng = np.random.default_rng(args.seed)
    steps = len(train_x) // args.batch
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train_x))
        cost = err = 0.0
        t0 = time.time()
        for s in range(steps):
            idx = order[s * args.batch:(s + 1) * args.batch]
            c = net.train_step(train_x[idx], train_y[idx])["costs"][0]
            cost += c["cost"]
            err += c["top1_error"]
            if (s + 1) % 50 == 0 or s + 1 == steps:
                rate = (s + 1) * args.batch / (time.time() - t0)
                print(f"\repoch {epoch}/{args.epochs}  batch {s + 1}/{steps}  cost {cost / (s + 1):.4f}  "
                      f"train error {err / (s + 1):.4f}  {rate:.0f} img/s", end="", flush=True)
        acc = evaluate(net, test_x, test_y)
        print(f"\nepoch {epoch}: test accuracy {acc:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    print(f"done in {time.time() - start:.0f} s: test accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
