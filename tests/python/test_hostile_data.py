"""Hostile data never gives a silent wrong answer (issue 16, the data side): test class folders
are matched to the training classes by name; unreadable images are counted per epoch and per
test in the training log, the first one named on stderr; a gzip IDX file inflates no further
than its header promises; data-set specs and their numbers outside the documented forms and
ranges are refused, naming what was wrong."""

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet import _core, cli

SIZE = 16
# A linear classifier of 3 x 16 x 16 images into the 3 classes of the folders below.
MODEL = {"layers": [
    {"name": "data", "type": "input", "channels": 3, "size": SIZE},
    {"name": "labels", "type": "labels"},
    {"name": "fc", "type": "fc", "inputs": ["data"], "outputs": 3, "init": "xavier", "epsW": 0.01, "epsB": 0.01},
    {"name": "cost", "type": "softmax_cost", "inputs": ["fc", "labels"]},
]}


def good_png(path: Path, colour: int) -> None:
    rng = np.random.default_rng(colour)
    pixels = np.clip(rng.normal(colour, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def huge_header_png(path: Path, width: int, height: int) -> None:
    """A real 8 x 8 PNG whose IHDR says width x height (its CRC recomputed, so only the size is
    wrong): what a decompression bomb's header looks like."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    b = bytearray(path.read_bytes())
    b[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    b[29:33] = zlib.crc32(bytes(b[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(b))


def plant_bad_files(folder: Path, prefix: str, kinds=("corrupt", "empty", "huge", "text", "truncated")) -> list:
    """Unreadable images of the kinds the issue names, in `folder`; returns their paths, sorted."""
    good = (folder / "g0.png").read_bytes()
    bad = {
        "corrupt": good[:40] + b"\x55" * 200 + good[240:],
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "text": b"hello, I am text named .png\n",
    }
    paths = []
    for kind in kinds:
        path = folder / f"{prefix}{kind}.png"
        if kind == "huge":
            huge_header_png(path, 65535, 65535)
        else:
            path.write_bytes(bad[kind])
        paths.append(path)
    return sorted(paths)


@pytest.fixture
def folders(tmp_path):
    """train/ and val/ with classes a, b, c of good PNGs (8 each in train, 4 in val)."""
    root = tmp_path / "data"
    for part, count in (("train", 8), ("val", 4)):
        for k, cls in enumerate("abc"):
            d = root / part / cls
            d.mkdir(parents=True)
            for i in range(count):
                good_png(d / f"g{i}.png", 40 + 80 * k + i)
    return root


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(MODEL))
    return str(path)


def test_val_classes_are_matched_by_name_not_position(folders):
    # val/ lacks class a: by position, b would take label 0 and c label 1.
    shutil.rmtree(folders / "val" / "a")
    train, test, _ = _core.open_dataset(str(folders), SIZE)
    assert test.class_names() == ["a", "b", "c"]
    labels = {Path(test.describe(i)).parent.name: test.load(i)[1] for i in range(len(test))}
    assert labels == {"b": 1, "c": 2}
    # A val class the training set lacks has no label: refused, naming the folder.
    (folders / "val" / "zebra").mkdir()
    good_png(folders / "val" / "zebra" / "z.png", 200)
    with pytest.raises(ValueError, match=r"class folder '.*/val/zebra' has no counterpart among the 3 training "
                                         r"classes \('a', 'b', 'c'\)"):
        _core.open_dataset(str(folders), SIZE)


def test_unreadable_images_are_counted_per_epoch_and_test_and_named(folders, model_file, tmp_path, capfd):
    train_bad = plant_bad_files(folders / "train" / "b", "x")  # 5 bad among 29 training images
    val_bad = plant_bad_files(folders / "val" / "a", "y", ("corrupt", "huge", "text"))  # 3 among 15
    save = tmp_path / "run"
    rc = cli.main(["train", model_file, "--data", str(folders), "--image-size", str(SIZE), "--epochs", "2",
                   "--batch", "8", "--save-dir", str(save), "--quiet", "--no-plots", "--threads", "1"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    events = [json.loads(line) for line in open(save / "log.jsonl")]
    epochs = [e for e in events if e["event"] == "epoch"]
    tests = [e for e in events if e["event"] == "test"]
    assert len(epochs) == 2 and tests
    # The test set is read in order: its first unreadable file is the first of val/a's bad ones.
    first_test = f"'{val_bad[0]}': "
    for e in epochs:
        assert e["train_skipped"] == len(train_bad) == 5, e
        assert e["train_first_skipped"].startswith("'" + str(folders / "train" / "b" / "x")), e
        assert e["test_skipped"] == len(val_bad) == 3, e
        assert e["test_first_skipped"].startswith(first_test), e
    assert all(t["skipped"] == 3 for t in tests)
    # stderr names the first skipped file of each pipeline once (training and test).
    warnings = [line for line in err.splitlines() if "could not be read and was skipped" in line]
    assert len(warnings) == 2, err
    assert any(first_test in w for w in warnings), err


def test_huge_header_png_is_refused_naming_the_file(tmp_path):
    (tmp_path / "c").mkdir()
    huge_header_png(tmp_path / "c" / "bomb.png", 65535, 65535)
    src = _core.folder_source(str(tmp_path), 32)
    with pytest.raises(ValueError, match=r"bomb\.png: bad PNG: image too large \(65535 x 65535 pixels; the limit "
                                         r"is 32768 a side and 268435456 pixels\)"):
        src.load(0)


def idx_header(dims) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


# A child process, so that its peak memory is this read's alone: reads the IDX file and prints
# the error and how far the peak resident memory rose (KiB).
CHILD = """
import resource, sys
from convnet import _core
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    _core.read_idx(sys.argv[1])
    print("read")
except ValueError as e:
    print(e)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_gzip_idx_bomb_inflates_no_further_than_its_header_promises(tmp_path):
    # 60 bytes promised, 256 MiB of zeros behind them in a ~256 KB gzip stream.
    path = tmp_path / "bomb-idx3-ubyte.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip wrapper
    with open(path, "wb") as f:
        f.write(z.compress(idx_header([3, 4, 5]) + bytes(60)))
        chunk = bytes(1 << 20)
        for _ in range(256):
            f.write(z.compress(chunk))
        f.write(z.flush())
    assert path.stat().st_size < 1 << 20
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    message, grew_kib = r.stdout.strip().splitlines()
    assert int(grew_kib) < 32 * 1024, f"peak memory rose by {int(grew_kib) // 1024} MiB reading a 60-byte promise"
    assert message == f"{path}: header says 3 x 4 x 5 (60 bytes of data) but the file holds more"


def test_gzip_idx_header_promising_more_than_gzip_can_hold(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(zlib.compress(idx_header([60000, 28, 28]) + bytes(100), wbits=31))
    with pytest.raises(ValueError, match=r"liar\.gz: header says 60000 x 28 x 28 \(47040000 bytes of data\), more "
                                         r"than a gzip file of \d+ bytes can hold"):
        _core.read_idx(str(path))


def test_idx_dimensions_wrapping_2_to_the_64_are_refused(tmp_path):
    path = tmp_path / "wrap"
    path.write_bytes(idx_header([1 << 31, 1 << 31, 4]))  # 2^64 bytes: "0" when it wraps
    with pytest.raises(ValueError, match=r"wrap: header says 2147483648 x 2147483648 x 4, more bytes than 64 bits"):
        _core.read_idx(str(path))


@pytest.mark.parametrize("spec,message", [
    ("generatedXYZ", r"data set 'generatedXYZ': unknown kind of data set; the accepted forms are fashion-mnist; .*generated\["),
    ("generated[classes=4294967297]", r"classes '4294967297' must be a whole number in \[1, 16384\]"),
    ("generated[count=99999999999999999999999]", r"count '99999999999999999999999' must be a whole number"),
    ("generated[size=100000]", r"size '100000' must be a whole number in \[1, 4096\]"),
    ("generated[count=12abc]", r"count '12abc' must be a whole number"),
])
def test_bad_data_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        _core.open_dataset(spec)


def test_data_options_out_of_range_are_refused_before_allocating(folders, model_file, capfd):
    common = ["train", model_file, "--data", str(folders), "--epochs", "1", "--quiet", "--no-plots"]
    assert cli.main([*common, "--image-size", "100000"]) != 0
    assert "image size 100000 must be in [1, 4096]" in capfd.readouterr().err
    assert cli.main([*common, "--image-size", str(SIZE), "--workers", "100000"]) != 0
    assert "workers 100000 must be at least 1 and at most 1024" in capfd.readouterr().err
