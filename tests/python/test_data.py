"""The data pipeline from Python: image decoding against Pillow, IDX files, the Pipeline's
ordering, determinism and augmentation, the statistics, and training a net from a Pipeline.

Reference pipelines are written in numpy / Pillow here. Two resize references are used for the
folder source:

* Pillow: decode, resize the shorter side with Image.BOX (shrinking) or Image.BILINEAR
  (enlarging), centre crop. Pillow's BOX filter weighs each input pixel 1 or 0 by whether its
  centre lies in the output pixel's footprint, whereas convnet weighs it by the exact overlap
  (area averaging), so on noisy images they differ by under one grey level on average (measured:
  worst mean |diff| 0.63 for JPEG and 0.88 for PNG at 256 on these images, single pixels up to
  about 10).
* Exact area averaging in numpy (float64) on Pillow's decoded pixels: with the same decoded
  pixels convnet must agree to rounding (measured: 0.07% of values off by one, from convnet's
  16-bit fixed-point weights, both for PNG and for JPEG decoded by libjpeg-turbo on both sides).
"""

from __future__ import annotations

import functools
import json
import os
import struct

import numpy as np
import pytest

import convnet
from convnet import _core, data, datasets

Image = pytest.importorskip("PIL.Image")

FASHION = datasets.FASHION_MNIST_DIR
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION),
                                   reason="dataset-fashion-mnist is not installed")


# ------------------------------------------------------------------------------------------------
# Helpers: generated photos, the reference resizes

def photo(width, height, seed):
    """An RGB test image: smooth gradients and waves plus a little noise (std 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / width * 3 + seed) * np.cos(y / height * 2)
    g = 255 * x / width
    b = 127 * (1 - y / height) + 60 * np.sin((x + y) / 37.0 + seed)
    img = np.stack([r, g, b], -1) + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")


def target_size(w, h, size):
    """Resized (width, height): the shorter side is `size`, the longer rounded half up
    (convnet's documented rule)."""
    if w <= h:
        return size, (2 * h * size + w) // (2 * w)
    return (2 * w * size + h) // (2 * h), size


def pillow_reference(path, size):
    """Decode, shorter side to `size` (BOX when shrinking, BILINEAR when enlarging), centre crop:
    3 x size x size float32."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = target_size(w, h, size)
    im = im.resize((nw, nh), Image.BOX if min(w, h) > size else Image.BILINEAR)
    x0, y0 = (nw - size) // 2, (nh - size) // 2
    im = im.crop((x0, y0, x0 + size, y0 + size))
    return np.asarray(im, np.float32).transpose(2, 0, 1)


@functools.lru_cache(maxsize=None)
def area_matrix(n_in, n_out, first, count):
    """Rows [first, first + count) of the n_out x n_in weights of exact area averaging (each
    output averages the input interval it covers, inputs weighted by their overlap)."""
    m = np.zeros((count, n_in))
    s = n_in / n_out
    for j in range(count):
        lo, hi = (first + j) * s, min(n_in, (first + j + 1) * s)
        i = np.arange(int(np.floor(lo)), min(n_in, int(np.ceil(hi))))
        m[j, i] = np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0, None)
        m[j] /= m[j].sum()
    return m


def area_reference(pixels, size):
    """Exact area averaging (shrinking only) of an H x W x 3 array, centre crop, rounded:
    3 x size x size."""
    h, w = pixels.shape[:2]
    nw, nh = target_size(w, h, size)
    assert min(w, h) >= size, "the area reference only shrinks"
    rows = area_matrix(h, nh, (nh - size) // 2, size)
    cols = area_matrix(w, nw, (nw - size) // 2, size)
    out = (rows @ pixels.astype(np.float64).reshape(h, w * 3)).reshape(size, w, 3)
    out = np.matmul(cols, out)  # (size, size, 3): cols applied to each output row
    return np.rint(out).transpose(2, 0, 1)


def pillow_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


SIZES = [(500, 375), (375, 500), (40, 30)]
CLASSES = ["zebra", "Mango", "apple"]  # sorted (byte order, as ImageFolder): Mango, apple, zebra


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    """root/<class>/ with each size as .jpg (quality 95) and .png, plus things to be ignored."""
    root = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i, (w, h) in enumerate(SIZES):
            im = photo(w, h, seed=10 * c + i)
            im.save(root / name / f"img{i}.jpg", quality=95)
            im.save(root / name / f"img{i}.png")
        (root / name / "notes.txt").write_text("not an image\n")   # other extensions: ignored
        (root / name / ".hidden.jpg").write_text("hidden\n")        # hidden files: ignored
    (root / ".ipynb_checkpoints").mkdir()                           # hidden folders: no class
    (root / "README").write_text("a file at the top is not a class\n")
    return root


# ------------------------------------------------------------------------------------------------
# Folder source: decoding and resizing against Pillow

def test_folder_source_classes_and_order(photo_root):
    src = data.folder_source(str(photo_root), size=32)
    assert src.class_names() == sorted(CLASSES) == ["Mango", "apple", "zebra"]
    assert (len(src), src.classes, src.channels, src.height, src.width) == (18, 3, 3, 32, 32)
    for i in range(len(src)):
        path = src.describe(i)
        x, label = src.load(i)
        assert x.shape == (3, 32, 32) and x.dtype == np.float32
        assert label == sorted(CLASSES).index(os.path.basename(os.path.dirname(path)))
    # Within a class, files in sorted order.
    names = [os.path.basename(src.describe(i)) for i in range(6)]
    assert names == sorted(names) and all(not n.startswith(".") for n in names)


@pytest.mark.parametrize("ext", ["jpg", "png"])
@pytest.mark.parametrize("size", [256, 224, 100])
def test_folder_source_matches_pillow(photo_root, ext, size):
    src = data.folder_source(str(photo_root), size=size)
    worst = []
    for i in range(len(src)):
        path = src.describe(i)
        if not path.endswith(ext):
            continue
        x, _ = src.load(i)
        assert x.shape == (3, size, size)
        assert 0 <= x.min() and x.max() <= 255 and np.array_equal(x, np.rint(x))
        diff = np.abs(x - pillow_reference(path, size))
        worst.append((diff.mean(), path))
        # Measured: worst 0.63 (JPEG) / 0.88 (PNG) at 256, 0.49 / 0.33 at 100, about 0.16 for the
        # enlarged 40 x 30 images.
        assert diff.mean() < 1.5, f"{path}: mean |convnet - Pillow| = {diff.mean():.3f} levels"
        assert np.percentile(diff, 99) <= 8, f"{path}: 99th percentile {np.percentile(diff, 99)}"
    assert len(worst) == 9
    print(f"worst mean |diff| vs Pillow at {size}: {max(worst)[0]:.3f} ({max(worst)[1]})")


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_folder_source_is_exact_area_average(photo_root, ext):
    """With Pillow's decoded pixels, convnet's shrink is exact area averaging to rounding (the
    JPEG decoders are both libjpeg-turbo; sizes above half the shorter side, 187, keep libjpeg
    from decoding at reduced scale)."""
    for size in (256, 200):
        src = data.folder_source(str(photo_root), size=size)
        for i in range(len(src)):
            path = src.describe(i)
            if not path.endswith(ext) or "img2" in path:  # img2 is enlarged, not shrunk
                continue
            x, _ = src.load(i)
            ref = area_reference(pillow_rgb(path), size)
            diff = np.abs(x - ref)
            # Measured: mean 0.0007 (7 values in 10,000 off by one: fixed-point weights). A
            # different libjpeg-turbo in Pillow's wheel may round a few JPEG pixels differently.
            limit = (1, 0.01) if ext == "png" else (3, 0.1)
            assert diff.max() <= limit[0] and diff.mean() <= limit[1], \
                f"{path} at {size}: max {diff.max()}, mean {diff.mean():.4f}"


@pytest.mark.parametrize("size", [40, 128])
def test_dct_scaled_jpeg_keeps_geometry(photo_root, size):
    """A JPEG decoded at reduced scale (1/8 for 40, 1/2 for 128 from 500 x 375) is resized with
    the file's geometry (375 / 2 = 187.5 pixels, not the rounded-up 188), so it matches exact area
    averaging of the full decode. Measured: mean |diff| at most 0.44 at 40 and 0.33 at 128 (it was
    3.8 and 1.14 with the rounded-up dimensions)."""
    src = data.folder_source(str(photo_root), size=size)
    worst = 0.0
    for i in range(len(src)):
        path = src.describe(i)
        if path.endswith("img0.jpg") or path.endswith("img1.jpg"):
            x, _ = src.load(i)
            diff = np.abs(x - area_reference(pillow_rgb(path), size))
            worst = max(worst, diff.mean())
            assert diff.mean() < 0.6, f"{path} at {size}: mean |diff| {diff.mean():.2f} vs full decode"
    print(f"worst mean |diff| vs exact area averaging of a full decode at {size}: {worst:.3f}")


def test_grey_and_cmyk_jpeg(tmp_path):
    (tmp_path / "c").mkdir()
    im = photo(500, 375, seed=3)
    im.convert("L").save(tmp_path / "c" / "grey.jpg", quality=95)
    im.convert("CMYK").save(tmp_path / "c" / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "c" / "cmyk.jpg").mode == "CMYK"
    src = data.folder_source(str(tmp_path), size=256)
    by_name = {os.path.basename(src.describe(i)): src.load(i)[0] for i in range(len(src))}

    grey = by_name["grey.jpg"]
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
    g = np.asarray(Image.open(tmp_path / "c" / "grey.jpg"))
    assert np.abs(grey[0] - area_reference(np.stack([g] * 3, -1), 256)[0]).max() <= 1

    cmyk = by_name["cmyk.jpg"]
    path = str(tmp_path / "c" / "cmyk.jpg")
    # Pillow's CMYK -> RGB is (255 - C)(255 - K) / 255 as convnet's; only rounding differs.
    # Measured: max 1, mean 0.0001; vs the Pillow pipeline 0.94; vs the RGB original 0.48.
    exact = np.abs(cmyk - area_reference(pillow_rgb(path), 256))
    assert exact.max() <= 2 and exact.mean() < 0.1, (exact.max(), exact.mean())
    assert np.abs(cmyk - pillow_reference(path, 256)).mean() < 1.5
    # And it is the picture that was saved, not inverted or channel-swapped.
    original = area_reference(np.asarray(im), 256)
    assert np.abs(cmyk - original).mean() < 2


def test_png_variants_and_content_sniffing(tmp_path):
    (tmp_path / "c").mkdir()
    im = photo(300, 200, seed=4)
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((200, 300), 7, np.uint8)))
    rgba.save(tmp_path / "c" / "a_rgba.png")
    im.convert("P", palette=Image.ADAPTIVE).save(tmp_path / "c" / "b_palette.png")
    im.convert("L").save(tmp_path / "c" / "c_grey.png")
    im.save(tmp_path / "c" / "d_png_named.JPEG", format="PNG")  # ImageNet has one of these
    src = data.folder_source(str(tmp_path), size=128)
    assert len(src) == 4
    for i in range(len(src)):
        path = src.describe(i)
        x, _ = src.load(i)
        diff = np.abs(x - area_reference(pillow_rgb(path), 128))  # alpha dropped, as Pillow
        assert diff.max() <= 1, f"{path}: max |diff| {diff.max()}"


# ------------------------------------------------------------------------------------------------
# Folder source: errors

@pytest.fixture
def broken_files(tmp_path):
    """A class folder with one good JPEG and broken files of several kinds."""
    d = tmp_path / "c"
    d.mkdir()
    photo(120, 90, seed=5).save(d / "good.jpg", quality=95)
    good = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[:len(good) // 2])
    (d / "header_only.jpg").write_bytes(good[:300])
    corrupt = bytearray(good)
    corrupt[len(good) // 2:len(good) // 2 + 200] = b"\x55" * 200
    (d / "corrupt.jpg").write_bytes(bytes(corrupt))
    (d / "text.jpg").write_text("hello, not an image\n")
    (d / "empty.jpg").write_bytes(b"")
    photo(120, 90, seed=6).save(d / "good.png")
    (d / "truncated.png").write_bytes((d / "good.png").read_bytes()[:1000])
    return tmp_path


@pytest.mark.parametrize("name,message", [
    ("truncated.jpg", "bad JPEG: Premature end of JPEG file"),
    ("header_only.jpg", "bad JPEG"),
    ("corrupt.jpg", "bad JPEG: Corrupt JPEG data"),
    ("text.jpg", "not a JPEG or PNG image"),
    ("empty.jpg", r"not a JPEG or PNG image \(empty file\)"),
    ("truncated.png", "bad PNG"),
])
def test_bad_file_is_data_error_naming_it(broken_files, name, message):
    src = data.folder_source(str(broken_files), size=64)
    i = [os.path.basename(src.describe(k)) for k in range(len(src))].index(name)
    with pytest.raises(data.DataError, match=message) as e:
        src.load(i)
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith(str(broken_files / "c" / name) + ":")


def test_empty_class_folder_missing_root_and_no_classes(tmp_path):
    (tmp_path / "full").mkdir()
    photo(40, 30, 1).save(tmp_path / "full" / "x.jpg")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder '.*/empty' has no images"):
        data.folder_source(str(tmp_path))
    with pytest.raises(ValueError, match=r"folder_source: '.*/nope' does not exist or is not a folder"):
        data.folder_source(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"does not exist or is not a folder"):
        data.folder_source(str(tmp_path / "full" / "x.jpg"))
    (tmp_path / "flat").mkdir()
    photo(40, 30, 1).save(tmp_path / "flat" / "x.jpg")
    with pytest.raises(ValueError, match=r"'.*/flat' has no class folders"):
        data.folder_source(str(tmp_path / "flat"))
    with pytest.raises(ValueError, match="size must be >= 1"):
        data.folder_source(str(tmp_path / "full"), size=0)


def _bad_folder(tmp_path, good, bad):
    """One class folder: JPEGs g00.jpg, g01.jpg, ... (`good` of them, 32 x 24, every pixel
    10 * their number) and text files named .jpg (`bad`, a list of names)."""
    d = tmp_path / "c"
    d.mkdir()
    for i in range(good):
        Image.fromarray(np.full((24, 32, 3), 10 * i, np.uint8)).save(d / f"g{i:02d}.jpg", quality=95)
    for name in bad:
        (d / name).write_text("not a jpeg")
    return data.folder_source(str(tmp_path), size=16)


@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_skips_and_counts_corrupt_files(tmp_path, workers):
    # Sorted: a_bad, g00 ... g04, g04x (bad), g05 ... g09.
    src = _bad_folder(tmp_path, good=10, bad=["a_bad.jpg", "g04x.jpg"])
    assert len(src) == 12
    pipe = data.Pipeline(src, batch=4, shuffle=False, train=False, workers=workers)
    for epoch in range(2):
        batches = list(pipe.epoch())
        assert [b.size for b in batches] == [4, 4, 4]
        values = np.concatenate([b.images()[:, 0, 0, 0] for b in batches])
        # A bad example is replaced by the next one of the order that loads.
        expected = [0, 0, 10, 20, 30, 40, 50, 50, 60, 70, 80, 90]
        assert np.abs(values - expected).max() <= 2, values
        assert [b.skipped for b in batches] == [1, 1, 0]
        assert pipe.skipped == 2 * (epoch + 1)
    # Shuffled and augmented: still every batch full, each bad file counted once per epoch
    # (also when the shuffle puts the two next to each other).
    pipe = data.Pipeline(src, batch=5, seed=9, crop=12, workers=workers)
    for epoch in range(4):
        batches = list(pipe.epoch())
        assert sum(b.size for b in batches) == 12
        assert sum(b.skipped for b in batches) == 2
    assert pipe.skipped == 8


def test_adjacent_corrupt_files_counted_once(tmp_path):
    src = _bad_folder(tmp_path, good=5, bad=["a1.jpg", "a2.jpg", "a3.jpg"])
    pipe = data.Pipeline(src, batch=8, shuffle=False, train=False, workers=1)
    b = next(pipe.epoch())
    assert b.size == 8
    assert b.skipped == 3, f"3 corrupt files, {b.skipped} reported"


def test_pipeline_gives_up_when_nothing_loads(tmp_path):
    src = _bad_folder(tmp_path, good=0, bad=["a1.jpg", "a2.jpg", "a3.jpg"])
    pipe = data.Pipeline(src, batch=2, workers=2)
    with pytest.raises(RuntimeError, match=r"3 consecutive examples failed to load, giving up: .*/c/a\d\.jpg"):
        next(pipe.epoch())
    with pytest.raises(RuntimeError, match="consecutive examples failed"):  # again, no hang
        next(pipe.epoch())


@pytest.mark.skipif(_core.cuda_device_count() > 0, reason="checks the error given where no GPU is visible")
def test_pinned_pipeline_without_a_gpu_says_so():
    src = data.generated_source(20, 2, 3, 8)
    with pytest.raises(ValueError, match="pinned_memory is for uploads to a GPU"):
        data.Pipeline(src, batch=4, pinned=True)


# ------------------------------------------------------------------------------------------------
# IDX

def write_idx(path, array, magic=None):
    magic = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    path.write_bytes(magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion():
    if not os.path.isdir(FASHION):
        pytest.skip("dataset-fashion-mnist is not installed")
    return datasets.fashion_mnist()


@needs_fashion
def test_idx_source_matches_fashion_mnist(fashion):
    tx, ty, vx, vy = fashion
    for train, x, y in ((False, vx, vy), (True, tx, ty)):
        src = data.fashion_mnist_source(train=train)
        assert (len(src), src.channels, src.height, src.width, src.classes) == (len(x), 1, 28, 28, 10)
        if not train:  # every pixel of the test set through a Pipeline (no shuffle, no augmentation)
            batches = list(data.Pipeline(src, batch=2500, shuffle=False, train=False, workers=2).epoch())
            np.testing.assert_array_equal(np.concatenate([b.images() for b in batches]), np.rint(x * 255))
            np.testing.assert_array_equal(np.concatenate([b.labels() for b in batches]), y)
        # Training set: a spread of 600 examples, directly.
        for i in np.linspace(0, len(x) - 1, 600).astype(int):
            img, label = src.load(int(i))
            assert label == y[i]
            np.testing.assert_array_equal(img, np.rint(x[i] * 255))


def test_idx_source_wrong_magic_names_file(tmp_path):
    images = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    labels = np.array([1, 0])
    write_idx(tmp_path / "labels", labels)
    write_idx(tmp_path / "images", images, magic=bytes([0, 0, 0x08, 1]))  # a labels magic
    with pytest.raises(ValueError, match=r"images: IDX file has 1 dimensions \(magic number 0x00000801\)"):
        data.idx_source(str(tmp_path / "images"), str(tmp_path / "labels"))
    write_idx(tmp_path / "images", images, magic=b"\x1f\x00\x08\x03")
    with pytest.raises(ValueError, match=r"images: not an IDX file \(bad magic number 0x1f000803\)"):
        data.idx_source(str(tmp_path / "images"), str(tmp_path / "labels"))
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", np.array([1, 0, 2]))
    with pytest.raises(ValueError, match=r"holds 2 images but .*labels holds 3 labels"):
        data.idx_source(str(tmp_path / "images"), str(tmp_path / "labels"))
    write_idx(tmp_path / "labels", labels)
    src = data.idx_source(str(tmp_path / "images"), str(tmp_path / "labels"))
    np.testing.assert_array_equal(src.load(1)[0][0], images[1])
    assert src.load(1)[1] == 0 and src.classes == 2


# ------------------------------------------------------------------------------------------------
# Pipeline: order, determinism

def indexed_source(n=103, classes=7, c=3, h=10, w=12):
    """Example i: every pixel of channel 0 holds i % 256 and of channel 1 holds i // 256 (so the
    output tells which example it is); label i % classes."""
    i = np.arange(n)
    x = np.zeros((n, c, h, w), np.float32)
    x[:, 0] = (i % 256)[:, None, None]
    if c > 1:
        x[:, 1] = (i // 256)[:, None, None]
    return data.array_source(x, (i % classes).astype(np.int32), classes)


def example_ids(batches):
    ims = np.concatenate([b.images() for b in batches])
    return (ims[:, 0, 0, 0] + 256 * ims[:, 1, 0, 0]).astype(int), np.concatenate([b.labels() for b in batches])


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n", [103, 600])
def test_every_example_once_per_epoch(shuffle, n):
    pipe = data.Pipeline(indexed_source(n), batch=16, shuffle=shuffle, train=False, workers=2)
    assert pipe.batches_per_epoch == (n + 15) // 16
    for epoch in range(3):
        batches = list(pipe.epoch())
        assert [(b.epoch, b.index) for b in batches] == [(epoch, k) for k in range(len(batches))]
        assert [b.size for b in batches] == [16] * (n // 16) + [n % 16]
        assert all(b.skipped == 0 for b in batches)
        ids, labels = example_ids(batches)
        assert sorted(ids) == list(range(n))
        assert np.array_equal(labels, ids % 7)
        assert (list(ids) == list(range(n))) == (not shuffle)
    assert pipe.skipped == 0


def test_drop_last():
    pipe = data.Pipeline(indexed_source(103), batch=16, train=False, drop_last=True)
    batches = list(pipe.epoch())
    assert [b.size for b in batches] == [16] * 6
    assert len(set(example_ids(batches)[0])) == 96


def _run(src, epochs=2, **kw):
    pipe = data.Pipeline(src, **kw)
    return [(b.images(), b.labels()) for _ in range(epochs) for b in pipe.epoch()]


def _stats_file(tmp_path, eigenvalues, eigenvectors, mean=()):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"format": "convnet-stats", "version": 1, "examples": 1,
                                "eigenvalues": list(map(float, eigenvalues)),
                                "eigenvectors": [list(map(float, v)) for v in eigenvectors],
                                "mean": list(map(float, mean))}))
    return data.load_stats(str(path))


def _rotation():
    q, _ = np.linalg.qr(np.array([[2.0, 1, 0.5], [0.3, 1.5, -1], [0.2, -0.7, 1.1]]))
    return q  # columns: orthonormal directions


def test_same_batches_for_any_worker_count(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (70, 3, 12, 12)).astype(np.float32)
    src = data.array_source(x, rng.integers(0, 5, 70).astype(np.int32), 5)
    stats = _stats_file(tmp_path, [300, 50, 10], _rotation().T)
    kw = dict(batch=8, seed=11, crop=9, pca_std=0.1, stats=stats, scale=1 / 255, mean_value=100)
    runs = [_run(src, workers=w, prefetch=p, **kw) for w, p in ((1, 1), (2, 4), (3, 2))]
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == 18
        for (a, la), (b, lb) in zip(runs[0], other):
            assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_epochs_differ_and_seed_repeats():
    src = indexed_source(200)
    orders = []
    for seed in (1, 1, 2):
        pipe = data.Pipeline(src, batch=32, seed=seed, train=False)
        orders.append([example_ids(list(pipe.epoch()))[0] for _ in range(2)])
    (a0, a1), (b0, b1), (c0, c1) = orders
    assert np.array_equal(a0, b0) and np.array_equal(a1, b1)  # same seed, same orders
    assert not np.array_equal(a0, a1)                          # epochs differ
    assert not np.array_equal(a0, c0)                          # seeds differ
    # start_epoch resumes: a fresh pipeline's epoch 1 is the same as the first one's.
    pipe = data.Pipeline(src, batch=32, seed=1, train=False)
    next(pipe.epoch())  # part of epoch 0, then jump
    pipe.start_epoch(1)
    assert np.array_equal(example_ids(list(pipe.epoch()))[0], a1)


def test_start_epoch_mid_epoch_resumes_bit_exactly(tmp_path):
    """start_epoch(epoch, first_batch): the batches an uninterrupted run gets from there on."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (90, 3, 12, 12)).astype(np.float32)
    src = data.array_source(x, rng.integers(0, 5, 90).astype(np.int32), 5)
    stats = _stats_file(tmp_path, [300, 50, 10], _rotation().T)
    kw = dict(batch=16, seed=5, crop=9, pca_std=0.1, stats=stats, workers=2)
    full = _run(src, epochs=2, **kw)  # 6 batches per epoch
    pipe = data.Pipeline(src, **kw)
    next(pipe.epoch())
    pipe.start_epoch(1, first_batch=4)
    resumed = [(b.images(), b.labels()) for b in pipe.epoch()]
    assert len(resumed) == 2
    for (a, la), (b, lb) in zip(full[6 + 4:], resumed):
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    with pytest.raises(ValueError, match="outside the epoch"):
        pipe.start_epoch(0, first_batch=7)


def test_augmentation_changes_per_epoch_not_with_batch_position():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (16, 3, 10, 10)).astype(np.float32)
    src = data.array_source(x, np.arange(16, dtype=np.int32), 16)
    pipe = data.Pipeline(src, batch=16, shuffle=False, crop=6, workers=2)
    e0 = list(pipe.epoch())[0].images()
    e1 = list(pipe.epoch())[0].images()
    assert not np.array_equal(e0, e1)  # fresh crops / reflections each epoch
    # An example's augmentation depends on (seed, epoch, example), not on the batch it lands in
    # nor its place there: batches of 5, shuffled differently, give example i the same crop.
    first = {}
    for b in data.Pipeline(src, batch=16, shuffle=False, crop=6, seed=1).epoch():
        first.update(zip(b.labels(), b.images()))
    pipe = data.Pipeline(src, batch=5, shuffle=True, crop=6, seed=1, workers=3)
    for b in pipe.epoch():
        for label, img in zip(b.labels(), b.images()):
            np.testing.assert_array_equal(img, first[label])


# ------------------------------------------------------------------------------------------------
# Augmentation

def find_window(out, image):
    """(y0, x0, mirrored) such that `out` is that window of `image` (mirrored or not)."""
    c, h, w = image.shape
    k = out.shape[1]
    found = []
    for y0 in range(h - k + 1):
        for x0 in range(w - k + 1):
            win = image[:, y0:y0 + k, x0:x0 + k]
            if np.array_equal(out, win):
                found.append((y0, x0, False))
            if np.array_equal(out, win[:, :, ::-1]):
                found.append((y0, x0, True))
    return found


def test_random_crops_are_windows_or_their_mirrors():
    n, crop = 40, 8
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (n, 3, 12, 14)).astype(np.float32)
    src = data.array_source(x, np.arange(n, dtype=np.int32), n)  # label = example index
    pipe = data.Pipeline(src, batch=16, seed=4, crop=crop, train=True, workers=2)
    seen = []
    for _ in range(3):
        for b in pipe.epoch():
            for img, label in zip(b.images(), b.labels()):
                found = find_window(img, x[label])
                assert len(found) == 1, f"example {label}: not a crop of its image ({found})"
                seen.append(found[0])
    offsets = {(y, x0) for y, x0, _ in seen}
    mirrored = sum(m for _, _, m in seen) / len(seen)
    assert len(offsets) >= 20, offsets          # of 5 x 7 possible
    assert 0.35 < mirrored < 0.65, mirrored


def test_crop_and_mirror_distribution():
    """Every offset possible and about equally likely; half the examples mirrored."""
    h, w, crop = 9, 13, 5
    img = np.broadcast_to(np.arange(h * w, dtype=np.float32).reshape(1, h, w), (3, h, w)).copy()
    counts = np.zeros((h - crop + 1, w - crop + 1))
    mirrors = 0
    keys = 4500
    for key in range(keys):
        out = _core.augment_example(img, data.DataStats(), True, key, crop=crop)
        first, second = out[0, 0, 0], out[0, 0, 1]
        m = second < first
        mirrors += m
        top_left = out[0, 0, -1] if m else first
        counts[int(top_left) // w, int(top_left) % w] += 1
    expected = keys / counts.size
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected, counts
    assert abs(mirrors / keys - 0.5) < 0.03


def test_test_mode_gives_the_centre_crop_and_mean_scale():
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 255, (20, 3, 11, 13)).astype(np.float32)
    src = data.array_source(x, np.zeros(20, np.int32), 1)
    stats = data.compute_stats(src, progress=False)
    y0, x0 = (11 - 7) // 2, (13 - 7) // 2
    out = np.concatenate([b.images() for b in data.Pipeline(
        src, batch=8, shuffle=False, train=False, crop=7, subtract_mean_image=True, stats=stats,
        scale=0.5).epoch()])
    mean = stats.mean.reshape(3, 11, 13)
    ref = (x[:, :, y0:y0 + 7, x0:x0 + 7] - mean[:, y0:y0 + 7, x0:x0 + 7]) * np.float32(0.5)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    out = np.concatenate([b.images() for b in data.Pipeline(
        src, batch=8, shuffle=False, train=False, mean_value=100.0, scale=1 / 255).epoch()])
    np.testing.assert_allclose(out, (x - 100) / 255, rtol=0, atol=1e-6)


def test_ten_views_match_numpy():
    rng = np.random.default_rng(7)
    img = rng.uniform(0, 255, (3, 9, 12)).astype(np.float32)
    k = 6
    views = data.ten_views(img, k)
    assert views.shape == (10, 3, k, k)
    corners = [(0, 0), (0, 12 - k), (9 - k, 0), (9 - k, 12 - k), ((9 - k) // 2, (12 - k) // 2)]
    ref = [img[:, y:y + k, x:x + k] for y, x in corners]
    ref += [v[:, :, ::-1] for v in ref]
    np.testing.assert_array_equal(views, np.stack(ref))
    np.testing.assert_array_equal(data.ten_views(img[:, :9, :9], 0)[4], img[:, :9, :9])
    with pytest.raises(ValueError, match="does not fit"):
        data.ten_views(img, 10)


def test_pca_noise_statistics(tmp_path):
    """offset = P @ (alpha * sqrt(lambda)), alpha ~ N(0, pca_std): mean 0, covariance
    P diag(pca_std^2 * lambda) P^T, the same offset at every pixel."""
    p = _rotation()
    lam = np.array([400.0, 100.0, 25.0])
    std = 0.1
    stats = _stats_file(tmp_path, lam, p.T)  # eigenvectors[i] is column p_i
    img = np.full((3, 4, 5), 100, np.float32)
    n = 20000
    offsets = np.empty((n, 3))
    for key in range(n):
        out = _core.augment_example(img, stats, True, 1000003 * key + 17, pca_std=std, mirror=False)
        o = out.reshape(3, -1) - 100
        assert np.ptp(o, axis=1).max() < 1e-4  # one offset per channel per image
        offsets[key] = o[:, 0]
    alphas = offsets @ p / np.sqrt(lam)  # back to alpha_i (P orthonormal)
    assert np.abs(alphas.mean(0)).max() < 4 * std / np.sqrt(n)
    cov = np.cov(alphas.T)
    np.testing.assert_allclose(np.diag(cov), std ** 2, rtol=0.05)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.05 * std ** 2
    np.testing.assert_allclose(np.cov(offsets.T), p @ np.diag(std ** 2 * lam) @ p.T,
                               atol=0.05 * std ** 2 * lam[0])
    kurtosis = (alphas ** 4).mean(0) / (alphas ** 2).mean(0) ** 2
    assert np.abs(kurtosis - 3).max() < 0.2  # gaussian
    # Test mode: no noise.
    np.testing.assert_array_equal(_core.augment_example(img, stats, False, 5, pca_std=std), img)
    # Without eigenvectors the Pipeline refuses (the noise would silently be zero).
    src = data.array_source(np.zeros((2, 3, 4, 4), np.float32), np.zeros(2, np.int32), 1)
    with pytest.raises(ValueError, match="needs stats with eigenvectors"):
        data.Pipeline(src, pca_std=0.1)


def test_compute_stats_matches_numpy(tmp_path):
    rng = np.random.default_rng(8)
    n = 50
    base = rng.normal(0, 1, (n, 1, 6, 7))
    x = np.concatenate([120 + 40 * base, 100 + 30 * base + rng.normal(0, 10, base.shape),
                        90 + rng.normal(0, 20, base.shape)], axis=1)
    x = np.clip(x, 0, 255).astype(np.float32)
    src = data.array_source(x, np.zeros(n, np.int32), 1)
    stats = data.compute_stats(src, progress=False)
    assert stats.examples == n
    np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0).ravel(), rtol=1e-6, atol=1e-4)
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(pixels.T, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    np.testing.assert_allclose(stats.eigenvalues, values, rtol=1e-4)
    got = np.array(stats.eigenvectors)  # row i = p_i
    for i in range(3):
        v = vectors[:, i] * np.sign(vectors[np.argmax(np.abs(vectors[:, i])), i])
        np.testing.assert_allclose(got[i], v, atol=1e-4)
        assert got[i][np.argmax(np.abs(got[i]))] > 0  # the sign convention
    # A sample: evenly spaced examples.
    sample = data.compute_stats(src, sample=7, progress=False)
    picked = [e * n // 7 for e in range(7)]
    np.testing.assert_allclose(sample.mean, x[picked].astype(np.float64).mean(0).ravel(), rtol=1e-6, atol=1e-4)
    # Saved and loaded unchanged.
    stats.save(str(tmp_path / "s.json"))
    again = data.load_stats(str(tmp_path / "s.json"))
    np.testing.assert_array_equal(again.mean, stats.mean)
    assert again.eigenvalues == stats.eigenvalues and again.eigenvectors == stats.eigenvectors


def test_compute_stats_progress_in_a_log_is_whole_lines(capsys):
    # Under pytest stderr is not a terminal: no carriage returns, the final count on its own line.
    src = data.array_source(np.zeros((30, 1, 4, 4), np.float32), np.zeros(30, np.int32), 1)
    data.compute_stats(src, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.endswith("\n") and "data statistics: 30/30 images" in err.splitlines()[-1]


def test_compute_stats_on_folder_skips_corrupt(tmp_path):
    src = _bad_folder(tmp_path, good=2, bad=["a_bad.jpg"])
    stats = data.compute_stats(src, progress=False)
    assert stats.examples == 2
    ref = np.mean([src.load(i)[0] for i in (1, 2)], axis=0)
    np.testing.assert_allclose(stats.mean.reshape(3, 16, 16), ref, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Training from the pipeline

@needs_fashion
def test_training_from_pipeline_reduces_cost(fashion):
    mean = float(fashion[0].mean() * 255)
    net = convnet.Net(convnet.zoo.small_convnet(classes=10, channels=1, size=28), seed=2)
    pipe = data.Pipeline(data.fashion_mnist_source(train=True), batch=64, seed=3, workers=2,
                         scale=1 / 255, mean_value=mean)
    costs = []
    for _, batch in zip(range(100), pipe.epoch()):
        assert batch.size == 64
        costs.append(net.train_batch(batch)["costs"][0]["cost"])
    first, last = np.mean(costs[:10]), np.mean(costs[-10:])
    print(f"cost over the first 10 batches {first:.3f}, last 10 {last:.3f}")
    # Seen: about 2.1 -> 0.74.
    assert last < 0.6 * first and last < 1.2, (first, last)
    # The held-out cost agrees: the net learnt from the pipeline's batches.
    vx, vy = fashion[2][:500], fashion[3][:500]
    p = net.predict(((vx * 255 - mean) / 255).astype(np.float32))
    assert (p.argmax(1) == vy).mean() > 0.6
