"""Shared fixtures: a generated classification problem with learnable labels."""

import numpy as np
import pytest


class Prototypes:
    """Each class is a fixed random smooth pattern; a case is its class's pattern, shifted by up to
    `shift` pixels, plus gaussian noise. Learnable, but not by a lookup: shifts and noise make
    the net generalise."""

    def __init__(self, classes=10, channels=1, size=16, noise=1.0, shift=3, seed=0):
        rng = np.random.default_rng(seed)
        raw = rng.normal(0, 1, (classes, channels, size + 2 * shift, size + 2 * shift))
        # Smooth with a 3x3 box so the patterns have spatial structure for convolutions.
        k = np.zeros_like(raw)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                k += np.roll(np.roll(raw, dy, axis=2), dx, axis=3)
        self.patterns = (k / 3.0).astype(np.float32)
        self.classes, self.channels, self.size = classes, channels, size
        self.noise, self.shift = noise, shift

    def batch(self, n, rng):
        y = rng.integers(0, self.classes, n)
        x = np.empty((n, self.channels, self.size, self.size), np.float32)
        for i, c in enumerate(y):
            oy, ox = rng.integers(0, 2 * self.shift + 1, 2)
            x[i] = self.patterns[c, :, oy:oy + self.size, ox:ox + self.size]
        x += rng.normal(0, self.noise, x.shape).astype(np.float32)
        return x, y.astype(np.int64)


@pytest.fixture
def problem():
    return Prototypes()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A folder of colour JPEGs, train/ and val/ with ten class folders (3000 + 500 images of
    several sizes and aspect ratios), written by the repository's scripts/make_shapes.py."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_shapes.py"
    spec = importlib.util.spec_from_file_location("make_shapes", script)
    make_shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_shapes)
    root = tmp_path_factory.mktemp("shapes")
    assert make_shapes.main([str(root), "--train", "3000", "--val", "500"]) == 0
    return root
