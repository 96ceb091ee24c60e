"""IDX reading (MNIST / Fashion-MNIST format) on hand-made files, and its errors."""

import gzip
import struct

import numpy as np
import pytest

from convnet import datasets


def write_idx(path, array, type_code=0x08, compress=False):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_images_and_labels(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"img{suffix}", images, compress=compress)
    write_idx(tmp_path / f"lab{suffix}", labels, compress=compress)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / f"img{suffix}")), images)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / f"lab{suffix}")), labels)


def test_reads_big_endian_ints(tmp_path):
    a = np.array([[1, -2], [300000, 4]], np.int32)
    write_idx(tmp_path / "ints", a, type_code=0x0C)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "ints")), a)


def test_wrong_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match=r"bad.*not an IDX file"):
        datasets.read_idx(str(tmp_path / "bad"))


def test_wrong_size(tmp_path):
    write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8))
    data = (tmp_path / "short").read_bytes()
    (tmp_path / "short").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"short: header says 4 x 4 \(16 bytes of data\) but the file holds 13"):
        datasets.read_idx(str(tmp_path / "short"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope"):
        datasets.read_idx(str(tmp_path / "nope"))


def test_fashion_mnist_from_the_debian_package():
    import os
    if not os.path.isdir(datasets.FASHION_MNIST_DIR):
        pytest.skip("dataset-fashion-mnist is not installed")
    tx, ty, vx, vy = datasets.fashion_mnist()
    assert tx.shape == (60000, 1, 28, 28) and vx.shape == (10000, 1, 28, 28)
    assert tx.dtype == np.float32 and 0.0 <= tx.min() and tx.max() <= 1.0
    assert sorted(np.unique(ty)) == list(range(10)) and np.bincount(vy).tolist() == [1000] * 10
