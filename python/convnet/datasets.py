"""Small data sets read straight into numpy: IDX files (MNIST, Fashion-MNIST), gzip or raw.

Fashion-MNIST as Debian's `dataset-fashion-mnist` package installs it is the project's default
real data set. (The C++ data pipeline with augmentation and prefetching is a separate piece.)
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed). Raises ValueError naming the file when the
    magic number, the dimensions or the size are wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such IDX file")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


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
