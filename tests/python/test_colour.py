"""Colour images end to end, on a folder of JPEGs written by scripts/make_shapes.py (ten classes
told apart by shape and colour): the PCA colour noise at the scale of the pixels' own colour
covariance, every normalisation option the same in 0-255 and 0-1 units with the size of its
effect pinned, and training with the AlexNet paper's whole augmentation (random crops,
reflections, PCA noise, the mean image) followed by the 10-view test and predict, for a small
net and for the zoo's AlexNets at a 64-pixel crop."""

import os

import numpy as np
import pytest

from convnet import _core, cli, data

CHANCE = 0.1  # ten classes


def load_all(source, count=None):
    n = len(source) if count is None else count
    x = np.stack([source.load(i)[0] for i in range(n)])
    return x, np.array([source.load(i)[1] for i in range(n)], np.int32)


def offsets(stats, draws, pca_std=0.1):
    """The colour offsets of `draws` images (keys 0..draws-1) under `stats`, draws x 3."""
    img = np.full((3, 2, 2), 128, np.float32)
    out = np.empty((draws, 3))
    for key in range(draws):
        aug = _core.augment_example(img, stats, True, 7919 * key + 3, pca_std=pca_std, mirror=False)
        out[key] = aug[:, 0, 0] - 128
    return out


def test_pca_noise_has_the_colour_covariance_of_the_pixels_times_pca_std_squared(shapes_root):
    source = data.folder_source(str(shapes_root / "train"), 32)
    stats = data.compute_stats(source, progress=False)
    x, _ = load_all(source)
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    cov = np.cov(pixels.T, bias=True)  # the pixels' colour covariance, in 0-255 units
    vectors = np.array(stats.eigenvectors).T  # columns p_i
    np.testing.assert_allclose(vectors @ np.diag(stats.eigenvalues) @ vectors.T, cov, rtol=0,
                               atol=1e-3 * cov.max())
    assert stats.eigenvalues[0] > 1000  # raw pixel variances: the eigenvalues are in levels^2
    got = np.cov(offsets(stats, 20000).T, bias=True)
    want = 0.01 * cov  # pca_std^2 times the colour covariance
    # Sampling error of a covariance from 20000 draws is about 1% of the variances.
    np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * want.max())
    ratio = np.trace(got) / np.trace(want)
    assert 0.95 < ratio < 1.05, ratio  # so neither 10x too strong nor 10x too weak
    # In levels: about a tenth of the colour spread along each component, far inside 0-255
    # (the eigenvalues themselves would move pixels by 0.1 * lambda_0, thousands of levels).
    spread = np.sqrt(np.diag(got)).max()
    assert 3 < spread < 15, spread


def test_every_normalisation_option_is_the_same_in_0_255_and_0_1_units(shapes_root):
    """Crops, reflections, PCA noise, the mean (image or scalar) and scale 'std' give the net the
    same input whether the pixels come in 0-255 or in 0-1 (to float rounding); the statistics
    follow the units."""
    source = data.folder_source(str(shapes_root / "train"), 32)
    x, y = load_all(source, 400)
    sources = {"0-255": data.array_source(x, y, 10), "0-1": data.array_source(x / 255, y, 10)}
    stats = {k: data.compute_stats(s, progress=False) for k, s in sources.items()}
    assert stats["0-1"].pixel_std == pytest.approx(stats["0-255"].pixel_std / 255, rel=1e-5)
    np.testing.assert_allclose(np.array(stats["0-1"].eigenvalues) * 255 ** 2, stats["0-255"].eigenvalues,
                               rtol=1e-4)
    for mean in ("image", "scalar"):
        batches = {}
        for units, s in sources.items():
            st = stats[units]
            pipe = data.Pipeline(s, batch=100, seed=3, crop=28, mirror=True, pca_std=0.1, stats=st,
                                 subtract_mean_image=mean == "image",
                                 mean_value=float(np.mean(st.mean)) if mean == "scalar" else 0.0,
                                 scale=_core.parse_scale("std", st))
            batches[units] = np.concatenate([b.images() for b in pipe.epoch()])
        np.testing.assert_allclose(batches["0-1"], batches["0-255"], rtol=0, atol=2e-4)
        # Centred, and of unit variance about the mean pixel (the mean image takes more away).
        b = batches["0-255"]
        assert abs(b.mean()) < 0.05, (mean, b.mean())
        assert (0.95 < b.std() < 1.05) if mean == "scalar" else (0.5 < b.std() < 1.0), (mean, b.std())


def test_size_of_the_colour_noise_and_of_the_rescale_in_the_input(shapes_root):
    """In the batches themselves: the noise shifts each image's channels by pca_std times the
    colour standard deviations, adds about pca_std^2 = 1% to the input's variance, and
    cuda-convnet2's rescale shrinks training inputs by 1/(1 + pca_std)."""
    source = data.folder_source(str(shapes_root / "train"), 32)
    stats = data.compute_stats(source, progress=False)
    scale = _core.parse_scale("std", stats)
    common = dict(batch=500, shuffle=False, workers=2, random_crop=False, mirror=False, stats=stats,
                  subtract_mean_image=True, scale=scale)

    def images(**kw):
        return np.concatenate([b.images() for b in data.Pipeline(source, **dict(common, **kw)).epoch()])

    clean = images(train=False)
    noisy = images(train=True, pca_std=0.1)
    rescaled = images(train=True, pca_std=0.1, pca_rescale=True)
    shift = (noisy - clean).reshape(len(clean), 3, -1)
    assert np.ptp(shift, axis=2).max() < 1e-4  # one offset per channel per image
    vectors = np.array(stats.eigenvectors).T
    cov = vectors @ np.diag(stats.eigenvalues) @ vectors.T
    want = 0.1 * np.sqrt(np.diag(cov)) * scale
    np.testing.assert_allclose(shift[:, :, 0].std(0), want, rtol=0.1)
    ratio = noisy.var() / clean.var()
    assert 1.0 < ratio < 1.03, ratio
    np.testing.assert_allclose(rescaled, noisy / 1.1, rtol=1e-5, atol=1e-6)


def train(root, save_dir, *extra, epochs="4"):
    argv = ["train", "fashion_alexnet", "--data", str(root), "--image-size", "32", "--crop", "28",
            "--mirror", "--mean", "image", "--epochs", epochs, "--batch", "64", "--quiet",
            "--save-dir", str(save_dir), "--no-plots", *extra]
    assert cli.main(argv) == 0
    return last_test_accuracy(save_dir)


def last_test_accuracy(run_dir):
    import json
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "log.jsonl"))]
    return 1 - [l for l in lines if l["event"] == "test"][-1]["top1_error"]


@pytest.fixture(scope="module")
def colour_run(shapes_root, tmp_path_factory):
    """fashion_alexnet on 28x28 crops of the colour folder with the paper's whole augmentation,
    and the same run without the colour noise."""
    runs = tmp_path_factory.mktemp("colour")
    with_pca = train(shapes_root, runs / "pca", "--pca-std", "0.1")
    without = train(shapes_root, runs / "plain")
    return runs / "pca", with_pca, without


def test_whole_augmentation_learns_colour_images(colour_run, capsys):
    run_dir, with_pca, without = colour_run
    assert with_pca > 0.6, with_pca  # chance 0.1; measured 0.862 at 6 epochs, 0.762 at 4
    # The colour noise at the paper's 0.1 costs little (measured 0.848 without it at 6 epochs,
    # 0.784 at 4). At its old
    # strength (eigenvalues for their square roots: 73x this along p_0 on these images) the same
    # run ended at 0.31.
    assert with_pca > without - 0.12, (with_pca, without)
    capsys.readouterr()
    assert cli.main(["test", str(run_dir), "--multiview"]) == 0
    out = capsys.readouterr().out
    assert "500 test images, 10-view" in out, out
    assert float(out.split("accuracy ")[1].rstrip(")\n")) > 0.6, out


def test_predict_sees_images_as_the_test_pipeline_does(colour_run, shapes_root, capsys):
    """Decoded at the run's image size, centre-cropped, minus the training set's mean image, times
    its scale: bitwise the test pipeline's input."""
    run_dir = colour_run[0]
    ckpt, net, run = cli.load_run(str(run_dir), "cpu")
    prep = cli.data_of_run(run)
    test = data.Pipeline(prep.test_source, batch=500, shuffle=False, train=False, crop=28,
                         subtract_mean_image=True, scale=run["scale"], stats=prep.stats)
    reference = next(test.epoch()).images()
    picked = list(range(0, 500, 50))
    paths = [prep.test_source.describe(i) for i in picked]
    x = cli.prediction_inputs(paths, 3, 28, run)
    np.testing.assert_array_equal(x, reference[picked])
    assert cli.main(["predict", str(run_dir), *paths, "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = run["class_names"]
    right = sum(lines[2 * k + 1].split()[-1] == names[prep.test_source.load(i)[1]]
                for k, i in enumerate(picked))
    assert right >= 6, lines


@pytest.mark.parametrize("model", ["alexnet_2012", "alexnet_one_tower"])
def test_zoo_alexnets_learn_colour_images_at_a_64_pixel_crop(model, shapes_root, tmp_path):
    """The README's recipe for small data sets: xavier init (biases 0), unit-variance input."""
    argv = ["train", model, "--data", str(shapes_root), "--image-size", "72", "--crop", "64",
            "--mirror", "--pca-std", "0.1", "--mean", "image", "--init", "xavier", "--epochs", "4",
            "--batch", "64", "--quiet", "--save-dir", str(tmp_path), "--no-plots"]
    assert cli.main(argv) == 0
    acc = last_test_accuracy(tmp_path)
    # Chance 0.1. Measured at 4 epochs: 0.65 and 0.58 in two sessions (two towers; 0.36 at 3)
    # and 0.80, 0.77 (one tower).
    assert acc > 0.4, acc
