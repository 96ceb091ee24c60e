"""Small data sets read straight into numpy: IDX files (MNIST, Fashion-MNIST), gzip or raw.

Fashion-MNIST as Debian's `dataset-fashion-mnist` package installs it is the project's default
real data set. (The C++ data pipeline with augmentation and prefetching is a separate piece.)
"""

from __future__ import annotations

import os

import numpy as np

from . import _core

FASHION_MNIST_DIR = _core.FASHION_MNIST_DIR  # the engine's (dataset.h)
FASHION_MNIST_CLASSES = list(_core.FASHION_MNIST_CLASSES)  # the engine's list

def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed; any IDX type) with the engine's reader.
    Raises ValueError naming the file when the magic number, the dimensions or the size are
    wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such IDX file")
    return _core.read_idx(path)


def fashion_mnist(root: str = FASHION_MNIST_DIR):
    """(train_x, train_y, test_x, test_y): images as N x 1 x 28 x 28 float32 scaled to [0, 1],
    labels as int64."""
    def images(name):
        return read_idx(os.path.join(root, name)).astype(np.float32)[:, None, :, :] / 255.0

    def labels(name):
        return read_idx(os.path.join(root, name)).astype(np.int64)

    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} not found: install Debian's dataset-fashion-mnist package")
    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))
