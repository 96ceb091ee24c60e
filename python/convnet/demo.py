"""The default job: train the AlexNet-style model for 28x28 images (zoo.fashion_alexnet) on
Fashion-MNIST on the CPU, with progress, and report test accuracy.

    python3 -m convnet.demo [--epochs 2] [--batch 128] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import data, datasets, zoo
from ._core import blas_name, num_threads, set_num_threads
from .net import Net


def evaluate(net: Net, pipeline: data.Pipeline) -> float:
    """Top-1 accuracy over one pass of a test pipeline."""
    correct = total = 0
    for batch in pipeline.epoch():
        net._net.set_batch(batch, net.inputs[0], net.label_inputs[0])
        stats = net._net.forward(False)["costs"][0]
        correct += round((1 - stats["top1_error"]) * batch.size)
        total += batch.size
    return correct / total


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
    train_src = data.fashion_mnist_source(train=True, root=args.data)
    test_src = data.fashion_mnist_source(train=False, root=args.data)
    # Pixels to [0, 1] minus the training set's mean pixel (scalar mean subtraction).
    mean = float(np.mean(data.compute_stats(train_src, progress=False).mean)) / 255.0
    opts = dict(batch=args.batch, scale=1.0 / 255.0, mean_value=mean * 255.0, workers=2, seed=args.seed)
    train = data.Pipeline(train_src, shuffle=True, train=True, mirror=False, **opts)
    test = data.Pipeline(test_src, shuffle=False, train=False, **opts)
    net = Net(zoo.fashion_alexnet(lr=args.lr), devices="cpu", seed=args.seed)
    print(f"convnet demo: fashion_alexnet ({net.parameter_count:,} parameters), "
          f"{len(train_src):,} training and {len(test_src):,} test images, batch {args.batch}, "
          f"{args.epochs} epoch(s), {num_threads()} thread(s), {blas_name()}", flush=True)
    steps = train.batches_per_epoch
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        cost = err = 0.0
        t0 = time.time()
        for s, batch in enumerate(train.epoch()):
            c = net.train_batch(batch)["costs"][0]
            cost += c["cost"]
            err += c["top1_error"]
            if (s + 1) % 50 == 0 or s + 1 == steps:
                rate = (s + 1) * args.batch / (time.time() - t0)
                print(f"\repoch {epoch}/{args.epochs}  batch {s + 1}/{steps}  cost {cost / (s + 1):.4f}  "
                      f"train error {err / (s + 1):.4f}  {rate:.0f} img/s", end="", flush=True)
        acc = evaluate(net, test)
        print(f"\nepoch {epoch}: test accuracy {acc:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    print(f"done in {time.time() - start:.0f} s: test accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
