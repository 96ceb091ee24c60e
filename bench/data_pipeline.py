"""Data-pipeline throughput: ImageNet-style JPEGs to augmented float batches, convnet vs Pillow + numpy
(vs torchvision where importable).

What is measured
----------------
Images per second through the AlexNet training preprocessing of generated ImageNet-sized JPEGs
(``--images`` of them, default 256, about 500 x 375 in four aspect ratios, quality 90, photo-like
content: waves, hard-edged blobs and noise, about 50 KB each), written once into a temporary folder
(or ``--dir``) as root/<class>/<n>.jpg, so the files are in the page cache. Per image:

1. decode the JPEG (RGB);
2. resize so the shorter side is 256 and take the centre 256 x 256 (area averaging);
3. a random 224 x 224 crop and a random horizontal reflection;
4. AlexNet's PCA colour noise (alpha ~ N(0, 0.1), with eigenvalues/vectors from
   ``convnet.data.compute_stats`` on 64 of the images, computed before timing);
5. written as float32 into a batch of ``--batch`` (default 32) images that the consumer receives.

Frameworks:

* ``convnet``: ``data.folder_source(root, 256)`` + ``data.Pipeline(crop=224, pca_std=0.1, ...)``
  with ``workers`` C++ threads; the consumer iterates ``Pipeline.epoch()`` and receives the CHWN
  batch tensors that ``Net.train_batch`` takes (no NCHW copy, ``Batch.images()`` is not called).
* ``pillow``: the same steps with Pillow (``Image.draft`` + ``convert``, ``resize(..., BOX,
  box=...)`` computing only the centre crop, as convnet does) and numpy (crop and reflection by
  slicing, one fused float32 conversion + PCA offset into the NCHW batch). 1 process (a new
  batch array each time, as convnet allocates a new batch tensor); and 2 processes for the
  2-core figure: a ``multiprocessing`` fork pool building whole batches into 4 reused
  shared-memory slots, so no pixels are pickled (returning 19 MB float arrays by pickling made
  2 processes slower than 1 here).
* ``torchvision``: ``Resize(256)``, ``CenterCrop(256)``, ``RandomCrop(224)``,
  ``RandomHorizontalFlip()``, ``ToTensor()`` and the PCA noise as a tensor op, images decoded with
  PIL, batched by ``torch.utils.data.DataLoader`` (``num_workers=0`` on one thread for 1 core,
  ``num_workers=2`` for 2). Skipped, and said so, when torch or torchvision is not importable.
  (Resize's BILINEAR is a wider filter than BOX and costs a little more.)

Each configuration creates its pipeline (threads / processes started), runs one untimed warm-up
epoch, then times ``--epochs`` epochs. The configurations are interleaved over ``--rounds`` rounds
(the development machines are shared VMs whose speed drifts) and the median is reported; the
first round tends to be slow for everyone (fresh memory). A reference row times Pillow's JPEG
decode alone (1 process): the libjpeg-turbo work every framework here pays, so an upper bound on
images/s per core (convnet links the system libjpeg-turbo, Pillow's wheel bundles its own).
"per core" divides by the worker threads / processes (the consumer only counts batches).
The ratio column is convnet's images/s per core over the row's, at the same number of cores
(the issue's target for convnet / Pillow: >= 2).

    PYTHONPATH=python python bench/data_pipeline.py [--images 256] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import mmap
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from PIL import Image  # noqa: E402

from convnet import data  # noqa: E402

SIZE, CROP, PCA_STD = 256, 224, 0.1
SHAPES = [(500, 375), (375, 500), (500, 333), (480, 360)]


# ------------------------------------------------------------------------------------------------
# The images

def photo(w, h, rng):
    """A photo-like RGB image: smooth waves, hard-edged discs (edges cost JPEG bits), noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 12, 3)
        img[..., c] = (128 + 60 * np.sin(x / w * fx + ph) * np.cos(y / h * fy)
                       + 40 * np.sin((x * fy + y * fx) / 97.0))
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 80)
        y0, y1, x0, x1 = (max(0, int(cy - r)), min(h, int(cy + r) + 1),
                          max(0, int(cx - r)), min(w, int(cx + r) + 1))
        sub = img[y0:y1, x0:x1]
        sub[(x[y0:y1, x0:x1] - cx) ** 2 + (y[y0:y1, x0:x1] - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_images(root, count, quality=90, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        d = os.path.join(root, f"class{i % classes}")
        os.makedirs(d, exist_ok=True)
        w, h = SHAPES[i % len(SHAPES)]
        photo(w, h, rng).save(os.path.join(d, f"{i:05d}.jpg"), quality=quality)


# ------------------------------------------------------------------------------------------------
# Pillow + numpy

def pillow_load(path):
    """Decode, shorter side to SIZE (BOX, only the centre crop computed): HWC uint8."""
    im = Image.open(path)
    im.draft("RGB", (SIZE, SIZE))  # libjpeg DCT scaling when the image is >= 2x larger, as convnet
    im = im.convert("RGB")
    w, h = im.size
    nw, nh = (SIZE, (2 * h * SIZE + w) // (2 * w)) if w <= h else ((2 * w * SIZE + h) // (2 * h), SIZE)
    x0, y0 = (nw - SIZE) // 2, (nh - SIZE) // 2
    sx, sy = w / nw, h / nh
    im = im.resize((SIZE, SIZE), Image.BOX, box=(x0 * sx, y0 * sy, (x0 + SIZE) * sx, (y0 + SIZE) * sy))
    return np.asarray(im)


def pillow_batch(paths, seed, eigvals, eigvecs, out=None):
    """An N x 3 x CROP x CROP float32 batch (into `out` when given): random crop, reflection,
    PCA noise."""
    rng = np.random.default_rng(seed)
    if out is None:
        out = np.empty((len(paths), 3, CROP, CROP), np.float32)
    for k, path in enumerate(paths):
        hwc = pillow_load(path)
        y0, x0 = rng.integers(0, SIZE - CROP + 1, 2)
        win = hwc[y0:y0 + CROP, x0:x0 + CROP]
        if rng.random() < 0.5:
            win = win[:, ::-1]
        offset = eigvecs @ (rng.normal(0, PCA_STD, 3) * eigvals)  # P @ (alpha * lambda)
        np.add(win.transpose(2, 0, 1), offset.astype(np.float32)[:, None, None], out=out[k],
               casting="unsafe")
    return out


# Set in the parent before the pool forks, inherited by the workers: the PCA statistics and the
# shared batch slots (an anonymous MAP_SHARED mapping).
_SHARED = {}


def _pool_batch(job):
    paths, seed, slot = job
    pillow_batch(paths, seed, *_SHARED["pca"], out=_SHARED["slots"][slot, :len(paths)])
    return slot, len(paths)


class DecodeOnlyRunner:
    """Reference, not a pipeline: Pillow's JPEG decode alone (the same libjpeg-turbo work every
    framework here does), 1 process. It bounds what any of them can reach on one core."""

    def __init__(self, paths):
        self.paths = paths

    def epoch(self):
        for p in self.paths:
            im = Image.open(p)
            im.draft("RGB", (SIZE, SIZE))
            im.load()
        return len(self.paths)

    def close(self):
        pass


class PillowRunner:
    """1 process: batches built in the consumer's process. n > 1: a fork pool of n processes
    writing whole batches into 2n shared-memory slots (no pickling of pixels); the consumer gets
    a view of a slot and hands the slot back once it has taken the next batch."""

    def __init__(self, paths, batch, processes, eigvals, eigvecs):
        self.paths, self.batch, self.processes = paths, batch, processes
        self.pca = (eigvals, eigvecs)
        self.pool = None
        self.epoch_no = 0
        if processes > 1:
            self.nslots = 2 * processes
            self.mem = mmap.mmap(-1, self.nslots * batch * 3 * CROP * CROP * 4)
            _SHARED["pca"] = self.pca
            _SHARED["slots"] = np.frombuffer(self.mem, np.float32).reshape(self.nslots, batch, 3, CROP, CROP)
            self.pool = mp.get_context("fork").Pool(processes)

    def epoch(self):
        order = np.random.default_rng(self.epoch_no).permutation(len(self.paths))
        jobs = [([self.paths[i] for i in order[b:b + self.batch]], (self.epoch_no, b))
                for b in range(0, len(order), self.batch)]
        self.epoch_no += 1
        if self.pool is None:
            return sum(len(pillow_batch(p, s, *self.pca)) for p, s in jobs)
        free, pending, n, held = list(range(self.nslots)), collections.deque(), 0, None
        jobs = collections.deque(jobs)
        while jobs or pending:
            while free and jobs:
                paths, seed = jobs.popleft()
                pending.append(self.pool.apply_async(_pool_batch, ((paths, seed, free.pop()),)))
            slot, count = pending.popleft().get()
            images = _SHARED["slots"][slot, :count]  # the batch the consumer receives
            n += len(images)
            if held is not None:
                free.append(held)  # the previous batch is done with
            held = slot
        return n

    def close(self):
        if self.pool:
            self.pool.close()
            self.pool.join()
            _SHARED.clear()
            self.mem.close()


# ------------------------------------------------------------------------------------------------
# convnet

class ConvnetRunner:
    def __init__(self, source, batch, workers, stats):
        self.pipe = data.Pipeline(source, batch=batch, workers=workers, seed=1, crop=CROP,
                                  pca_std=PCA_STD, stats=stats)

    def epoch(self):
        return sum(b.size for b in self.pipe.epoch())

    def close(self):
        del self.pipe


# ------------------------------------------------------------------------------------------------
# torchvision

def torchvision_available():
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        return None
    except Exception as e:  # ImportError, or a broken install
        return f"{type(e).__name__}: {e}"


class _Lighting:
    """AlexNet PCA noise on a [0, 1] CHW tensor (eigenvalues scaled by 1/255 accordingly)."""

    def __init__(self, eigvals, eigvecs):
        import torch
        self.torch = torch
        self.eigvals = torch.tensor(eigvals / 255.0, dtype=torch.float32)
        self.eigvecs = torch.tensor(eigvecs, dtype=torch.float32)

    def __call__(self, t):
        alpha = self.torch.randn(3) * PCA_STD
        return t + (self.eigvecs @ (alpha * self.eigvals)).view(3, 1, 1)


class _Folder:
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), 0


class TorchvisionRunner:
    def __init__(self, paths, batch, workers, eigvals, eigvecs):
        import torch
        from torchvision import transforms as T
        tf = T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.RandomCrop(CROP),
                        T.RandomHorizontalFlip(), T.ToTensor(), _Lighting(eigvals, eigvecs)])
        self.loader = torch.utils.data.DataLoader(
            _Folder(paths, tf), batch_size=batch, shuffle=True, num_workers=workers,
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def epoch(self):
        return sum(len(x) for x, _ in self.loader)

    def close(self):
        del self.loader


# ------------------------------------------------------------------------------------------------

def time_epochs(runner, epochs):
    runner.epoch()  # warm-up: threads / processes started, caches filled
    start = time.perf_counter()
    n = sum(runner.epoch() for _ in range(epochs))
    return n / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--dir", help="keep the generated JPEGs here (default: a temporary folder)")
    ap.add_argument("--no-torch", action="store_true", help="skip torchvision even if importable")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    root = args.dir or tempfile.mkdtemp(prefix="convnet_bench_jpegs_")
    try:
        if not os.path.isdir(os.path.join(root, "class0")):
            t = time.perf_counter()
            make_images(root, args.images, args.quality)
            print(f"wrote {args.images} JPEGs to {root} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        source = data.folder_source(root, SIZE)
        paths = [source.describe(i) for i in range(len(source))]
        kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        stats = data.compute_stats(source, sample=64, progress=False)
        eigvals = np.array(stats.eigenvalues, np.float64)
        eigvecs = np.array(stats.eigenvectors, np.float64).T  # columns p_i

        configs = []  # (framework, cores, factory)
        for w in (1, 2):
            configs.append(("convnet", w, lambda w=w: ConvnetRunner(source, args.batch, w, stats)))
            configs.append(("pillow", w, lambda w=w: PillowRunner(paths, args.batch, w, eigvals, eigvecs)))
        configs.append(("decode only (Pillow)", 1, lambda: DecodeOnlyRunner(paths)))
        torch_missing = "--no-torch" if args.no_torch else torchvision_available()
        versions = ""
        if torch_missing is None:
            import torch
            import torchvision
            torch.set_num_threads(1)
            versions = f", torch {torch.__version__}, torchvision {torchvision.__version__}"
            configs.append(("torchvision", 1, lambda: TorchvisionRunner(paths, args.batch, 0, eigvals, eigvecs)))
            configs.append(("torchvision", 2, lambda: TorchvisionRunner(paths, args.batch, 2, eigvals, eigvecs)))
        else:
            print(f"torchvision: not measured ({torch_missing})", file=sys.stderr)

        rates = {(f, c): [] for f, c, _ in configs}
        for r in range(args.rounds):
            for f, c, make in configs:
                runner = make()
                try:
                    rates[(f, c)].append(time_epochs(runner, args.epochs))
                finally:
                    runner.close()
                print(f"round {r + 1}: {f:20s} {c} core(s) {rates[(f, c)][-1]:7.1f} images/s", file=sys.stderr)

        rows = []
        for f, c, _ in configs:
            med = statistics.median(rates[(f, c)])
            rows.append(dict(framework=f, cores=c, images_per_s=med, per_core=med / c,
                             runs=[round(x, 1) for x in rates[(f, c)]]))
        per_core = {(r["framework"], r["cores"]): r["per_core"] for r in rows}
        for r in rows:  # convnet's per-core rate over this row's, at the same number of cores
            r["convnet_over_this_per_core"] = (None if r["framework"] == "convnet"
                                               else per_core[("convnet", r["cores"])] / r["per_core"])

        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        from PIL import features
        header = (f"{len(paths)} JPEGs, {kb:.0f} KB average, ~500 x 375, quality {args.quality}; "
                  f"batch {args.batch}, {args.epochs} timed epochs x {args.rounds} rounds (median); "
                  f"{os.cpu_count()} CPUs ({cpu}); Pillow {Image.__version__} "
                  f"(libjpeg-turbo {features.version('libjpeg_turbo')}), numpy {np.__version__}{versions}")
        print(header)
        print()
        print("| framework | cores | images/s | images/s per core | ms/image per core "
              "| convnet / this, per core | runs (images/s) |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for r in rows:
            ratio = r["convnet_over_this_per_core"]
            print(f"| {r['framework']} | {r['cores']} | {r['images_per_s']:.0f} | {r['per_core']:.0f} | "
                  f"{1000 / r['per_core']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} | "
                  f"{', '.join(f'{x:.0f}' for x in r['runs'])} |")
        if torch_missing is not None:
            print(f"\ntorchvision: not measured ({torch_missing})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(setup=header, torchvision=torch_missing or "measured", results=rows), f, indent=1)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
