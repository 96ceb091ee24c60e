#!/usr/bin/env python3
"""Writes a small ImageNet-style folder of colour JPEGs for tests and demos:

    ROOT/train/<class>/<n>.jpg and ROOT/val/<class>/<n>.jpg

Ten classes, named <colour>_<shape>: five shapes (disc, square, triangle, cross, ring) in two
colour families (red: hues within 20 degrees of red; blue: within 20 degrees of blue), so that
neither the shape nor the colour alone tells the classes apart. Each image has its own size
(shorter side 40 to 100 pixels) and aspect ratio (1:1, 4:3, 3:4, 3:2, 2:3 or 16:9), a
low-saturation background with a brightness gradient and pixel noise, and one object of random
size, rotation, position (inside the central square, which the folder source keeps), hue,
saturation and brightness. JPEG quality 70 to 95. Everything follows from --seed, so the same
command always writes the same files.

    python3 scripts/make_shapes.py ROOT [--train 3000] [--val 500] [--seed 1]

Needs numpy and Pillow. Prints the number of files written.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross", "ring")
COLOURS = {"red": 0.0, "blue": 230.0}  # hue in degrees at the centre of each family
CLASSES = [f"{c}_{s}" for c in COLOURS for s in SHAPES]
ASPECTS = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9))
SUPERSAMPLE = 3  # the object is drawn at 3x and shrunk, for smooth edges


def _rgb(hue_deg: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360, saturation, value)
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a square, triangle or cross of circumradius `radius`, rotated by `angle`."""
    if shape == "square":
        corners = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    else:  # cross: arms of half-width w
        w = 0.3
        corners = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
                   (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in corners]


def make_image(label: int, rng: np.random.Generator) -> Image.Image:
    colour, shape = CLASSES[label].split("_")
    aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
    short = int(rng.integers(40, 101))
    width, height = (short * aw // ah, short) if aw >= ah else (short, short * ah // aw)

    # Background: a dull colour, a linear brightness gradient in a random direction, pixel noise.
    base = np.array(_rgb(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.25, 0.85)), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (xx / width - 0.5) * math.cos(direction) + (yy / height - 0.5) * math.sin(direction)
    background = base + rng.uniform(20, 70) * ramp[..., None] + rng.normal(0, 6, (height, width, 3))
    picture = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")

    # The object, inside the central short x short square (what a centre crop keeps).
    radius = short * rng.uniform(0.2, 0.32)
    margin = radius * 1.05
    cx = width / 2 + rng.uniform(-1, 1) * max(0.0, short / 2 - margin)
    cy = height / 2 + rng.uniform(-1, 1) * max(0.0, short / 2 - margin)
    fill = _rgb(COLOURS[colour] + rng.uniform(-20, 20), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    k = SUPERSAMPLE
    mask = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(mask)
    if shape in ("disc", "ring"):
        r = radius * k
        draw.ellipse((cx * k - r, cy * k - r, cx * k + r, cy * k + r), fill=255)
        if shape == "ring":
            r *= rng.uniform(0.45, 0.6)
            draw.ellipse((cx * k - r, cy * k - r, cx * k + r, cy * k + r), fill=0)
    else:
        draw.polygon(_polygon(shape, cx * k, cy * k, radius * k, rng.uniform(0, 2 * math.pi)), fill=255)
    mask = mask.resize((width, height), Image.BOX)
    picture.paste(Image.new("RGB", (width, height), fill), (0, 0), mask)
    return picture


def write_split(root: str, split: str, count: int, seed: int) -> int:
    # Its own random stream per split, so --train does not change the validation images.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    for name in CLASSES:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for n in range(count):
        label = n % len(CLASSES)
        quality = int(rng.integers(70, 96))
        path = os.path.join(root, split, CLASSES[label], f"{n:05d}.jpg")
        make_image(label, rng).save(path, "JPEG", quality=quality)
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="output folder (train/ and val/ are created in it)")
    ap.add_argument("--train", type=int, default=3000, help="training images (default 3000)")
    ap.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    a = ap.parse_args(argv)
    if a.train < len(CLASSES) or a.val < len(CLASSES):
        ap.error(f"--train and --val need at least one image per class ({len(CLASSES)})")
    try:
        written = write_split(a.root, "train", a.train, a.seed) + write_split(a.root, "val", a.val, a.seed)
    except OSError as e:
        print(f"make_shapes: cannot write into {a.root}: {e}", file=sys.stderr)
        return 2
    print(f"make_shapes: {written} JPEG files in {a.root}/train and {a.root}/val, "
          f"{len(CLASSES)} classes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
