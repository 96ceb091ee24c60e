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
4. AlexNet's PCA colour noise (alpha ~ N(0, 0.1) times the standard deviations along the
   principal components, the square roots of the eigenvalues from ``convnet.data.compute_stats``
   on 64 of the images, computed before timing);
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
* ``torchvision``: images decoded by ``torchvision.io.decode_jpeg`` (libjpeg-turbo, to uint8
  tensors), then ``transforms.v2``: ``Resize(256)`` (antialiased bilinear), ``CenterCrop(256)``,
  ``RandomCrop(224)``, ``RandomHorizontalFlip()``, ``ToDtype(float32)`` and the PCA noise as a
  tensor op, batched by ``torch.utils.data.DataLoader`` (``num_workers=0`` for 1 core, ``2`` for
  2; one torch thread per process). torch usually lives in its own environment, so this part
  runs in a subprocess of ``--torch-python`` (default: this interpreter if it imports
  torchvision, else ``/opt/torchvenv/bin/python``), launched each round in turn with the others;
  only its epochs are timed. Skipped, and said so, when no such interpreter imports torchvision.
  (Its antialiased bilinear Resize is a wider filter than BOX and costs a little more.)

Each configuration creates its pipeline (threads / processes started), runs one untimed warm-up
epoch, then times ``--epochs`` epochs. The configurations are interleaved over ``--rounds`` rounds
(the development machines are shared VMs whose speed drifts) and the median is reported; the
first round tends to be slow for everyone (fresh memory). A reference row times Pillow's JPEG
decode alone (1 process): the libjpeg-turbo work every framework here pays, so an upper bound on
images/s per core (convnet links the system libjpeg-turbo, Pillow's wheel bundles its own).
"per core" divides by the worker threads / processes (the consumer only counts batches).
The ratio column is convnet's images/s per core over the row's, at the same number of cores
(the issue's target for convnet / Pillow: >= 2), from the medians; the next column takes that
ratio within each round and reports the median over rounds.

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
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from PIL import Image  # noqa: E402

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


def pillow_batch(paths, seed, sds, eigvecs, out=None):
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
        offset = eigvecs @ (rng.normal(0, PCA_STD, 3) * sds)  # P @ (alpha * sqrt(lambda))
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

    def __init__(self, paths, batch, processes, sds, eigvecs):
        self.paths, self.batch, self.processes = paths, batch, processes
        self.pca = (sds, eigvecs)
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
        from convnet import data
        self.pipe = data.Pipeline(source, batch=batch, workers=workers, seed=1, crop=CROP,
                                  pca_std=PCA_STD, stats=stats)

    def epoch(self):
        return sum(b.size for b in self.pipe.epoch())

    def close(self):
        del self.pipe


# ------------------------------------------------------------------------------------------------
# torchvision (run in a subprocess: torch usually lives in another environment)

TORCH_VENV_PYTHON = "/opt/torchvenv/bin/python"
_PROBE = "import torch, torchvision; print(torch.__version__, torchvision.__version__)"


def find_torch_python(requested):
    """(interpreter, "torch X, torchvision Y") or (None, why not)."""
    candidates = [requested] if requested else [sys.executable, TORCH_VENV_PYTHON]
    why = []
    for exe in candidates:
        if not exe or not os.path.exists(exe):
            why.append(f"{exe}: not found")
            continue
        r = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True)
        if r.returncode == 0:
            torch_v, tv_v = r.stdout.split()
            return exe, f"torch {torch_v}, torchvision {tv_v}"
        why.append(f"{exe}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return None, "; ".join(why)


def torchvision_child(args):
    """The subprocess: one pipeline, a warm-up epoch, then --epochs timed; prints images/s."""
    import torch
    from torchvision import io
    from torchvision.transforms import v2 as T
    torch.set_num_threads(1)
    with open(args.pca) as f:
        pca = json.load(f)
    sds = torch.tensor(pca["sds"], dtype=torch.float32)
    eigvecs = torch.tensor(pca["eigvecs"], dtype=torch.float32)  # columns p_i

    class Lighting:  # AlexNet PCA noise on a [0, 255] float CHW tensor
        def __call__(self, t):
            alpha = torch.randn(3) * PCA_STD
            return t + (eigvecs @ (alpha * sds)).view(3, 1, 1)

    tf = T.Compose([T.Resize(SIZE, antialias=True), T.CenterCrop(SIZE), T.RandomCrop(CROP),
                    T.RandomHorizontalFlip(), T.ToDtype(torch.float32), Lighting()])

    class Folder(torch.utils.data.Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return tf(io.decode_jpeg(io.read_file(self.paths[i]), mode=io.ImageReadMode.RGB)), 0

    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.torchvision_child) for f in fs
                   if f.endswith(".jpg"))
    workers = args.cores if args.cores > 1 else 0
    loader = torch.utils.data.DataLoader(
        Folder(paths), batch_size=args.batch, shuffle=True, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    sum(len(x) for x, _ in loader)  # warm-up: workers started, caches filled
    start = time.perf_counter()
    n = sum(len(x) for _ in range(args.epochs) for x, _ in loader)
    print(json.dumps({"images_per_s": n / (time.perf_counter() - start)}))


class TorchvisionRunner:
    """Times one torchvision configuration in a subprocess (see torchvision_child)."""

    def __init__(self, python, root, batch, cores, epochs, pca_path):
        self.cmd = [python, os.path.abspath(__file__), "--torchvision-child", root, "--cores",
                    str(cores), "--batch", str(batch), "--epochs", str(epochs), "--pca", pca_path]

    def rate(self):
        r = subprocess.run(self.cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"torchvision subprocess failed: {r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])["images_per_s"]

    def close(self):
        pass


# ------------------------------------------------------------------------------------------------

def time_epochs(runner, epochs):
    if hasattr(runner, "rate"):  # timed by itself (a subprocess)
        return runner.rate()
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
    ap.add_argument("--no-torch", action="store_true", help="skip torchvision")
    ap.add_argument("--torch-python", help="interpreter for the torchvision part (default: this "
                    f"one if it imports torchvision, else {TORCH_VENV_PYTHON})")
    ap.add_argument("--json", help="also write the results here")
    # The torchvision subprocess's own arguments.
    ap.add_argument("--torchvision-child", metavar="ROOT", help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--pca", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torchvision_child:
        return torchvision_child(args)

    from convnet import data

    load_before = os.getloadavg()
    root = args.dir or tempfile.mkdtemp(prefix="convnet_bench_jpegs_")
    pca_path = None
    try:
        if not os.path.isdir(os.path.join(root, "class0")):
            t = time.perf_counter()
            make_images(root, args.images, args.quality)
            print(f"wrote {args.images} JPEGs to {root} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        source = data.folder_source(root, SIZE)
        paths = [source.describe(i) for i in range(len(source))]
        kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        stats = data.compute_stats(source, sample=64, progress=False)
        sds = np.sqrt(np.array(stats.eigenvalues, np.float64))  # standard deviations along p_i
        eigvecs = np.array(stats.eigenvectors, np.float64).T  # columns p_i

        configs = []  # (framework, cores, factory)
        for w in (1, 2):
            configs.append(("convnet", w, lambda w=w: ConvnetRunner(source, args.batch, w, stats)))
            configs.append(("pillow", w, lambda w=w: PillowRunner(paths, args.batch, w, sds, eigvecs)))
        configs.append(("decode only (Pillow)", 1, lambda: DecodeOnlyRunner(paths)))
        torch_missing, versions = "--no-torch", ""
        if not args.no_torch:
            python, found = find_torch_python(args.torch_python)
            if python:
                torch_missing, versions = None, f", {found} (in {python})"
                fd, pca_path = tempfile.mkstemp(suffix=".json", prefix="convnet_bench_pca_")
                with os.fdopen(fd, "w") as f:
                    json.dump(dict(sds=sds.tolist(), eigvecs=eigvecs.tolist()), f)
                for c in (1, 2):
                    configs.append(("torchvision", c, lambda c=c: TorchvisionRunner(
                        python, root, args.batch, c, args.epochs, pca_path)))
            else:
                torch_missing = found
        if torch_missing is not None:
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
            mine = r["framework"] == "convnet"
            r["convnet_over_this_per_core"] = None if mine else per_core[("convnet", r["cores"])] / r["per_core"]
            # The same, round by round (each round runs every configuration in turn, so the
            # ratio within a round is less exposed to the machine's drift), then the median.
            ours = rates[("convnet", r["cores"])]
            r["round_ratio_median"] = None if mine else statistics.median(
                a / b for a, b in zip(ours, rates[(r["framework"], r["cores"])]))

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
        load_after = os.getloadavg()
        print(header)
        print(f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
              f"after: {', '.join(f'{x:.2f}' for x in load_after)}")
        print()
        print("| framework | cores | images/s | images/s per core | ms/image per core "
              "| convnet / this, per core | same, median of rounds | runs (images/s) |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            ratio, rounds = r["convnet_over_this_per_core"], r["round_ratio_median"]
            print(f"| {r['framework']} | {r['cores']} | {r['images_per_s']:.0f} | {r['per_core']:.0f} | "
                  f"{1000 / r['per_core']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} | "
                  f"{'' if rounds is None else f'{rounds:.2f}'} | "
                  f"{', '.join(f'{x:.0f}' for x in r['runs'])} |")
        if torch_missing is not None:
            print(f"\ntorchvision: not measured ({torch_missing})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(setup=header, torchvision=torch_missing or "measured", results=rows,
                               load_before=load_before, load_after=load_after), f, indent=1)
    finally:
        if pca_path:
            os.unlink(pca_path)
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
