"""Hostile numbers through the Python API and the `convnet` command (issue 16, "no silent wrong
answers"): NaN weights are never scored as accurate, a NaN batch or a diverging step never
reaches the weights, integer options never wrap, and every unreadable argument or image file is
a clear error naming the culprit."""

import io
import os
import re

import numpy as np
import pytest

import convnet
from convnet import _core, cli
from convnet.data import Pipeline, array_source

DATA = "generated[count=128;classes=4;channels=1;size=12;seed=5]"


def model(filters=4):
    m = convnet.Model()
    x = m.input("data", channels=3, size=8)
    y = m.labels("labels")
    h = m.conv("c", x, filters=filters, size=3, neuron="relu")
    h = m.fc("f", h, outputs=2)
    m.softmax_cost("cost", h, y)
    return m


def batch(n=2):
    return np.random.default_rng(0).normal(0, 1, (n, 3, 8, 8)).astype(np.float32), np.arange(n) % 2


def params(net):
    return {n: net.get_param(n) for n in net.param_names()}


def assert_unchanged(net, before):
    for name, value in before.items():
        np.testing.assert_array_equal(net.get_param(name), value, err_msg=name)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- 1. non-finite scores are never counted as correct ----
def nan_weights_net():
    net = convnet.Net(model())
    net.set_param("f.weights", np.full_like(net.get_param("f.weights"), np.nan))
    return net


def test_test_mode_forward_refuses_nan_scores_naming_the_layer():
    net = nan_weights_net()
    x, y = batch()
    with pytest.raises(FloatingPointError, match=r"cost layer 'cost' gives a cost of nan.*"
                                                 r"layer 'f' \(fc\): nan at example 0 .*'f.weights' holds nan"):
        net.forward(x, y, train=False)
    with pytest.raises(FloatingPointError, match=r"layer 'f' \(fc\)"):
        net.predict(x)


def test_training_mode_reports_no_error_rate_for_a_nan_cost():
    # Before: top1_error 0.0, since a NaN score ranks below no class.
    r = nan_weights_net().forward(*batch(), train=True)
    assert np.isnan(r["objective"])
    assert np.isnan(r["costs"][0]["top1_error"]) and np.isnan(r["costs"][0]["top5_error"])


def test_evaluate_refuses_nan_scores_naming_batch_and_layer():
    x, y = batch(8)
    pipe = Pipeline(array_source(x, y.astype(np.int32), 2), batch=4, shuffle=False, train=False, workers=1)
    with pytest.raises(FloatingPointError, match=r"evaluate, test batch 1: .*layer 'f' \(fc\)"):
        convnet.evaluate(nan_weights_net(), pipe)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder: small_convnet trained one epoch on grey generated data."""
    run_dir = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "small_convnet", "--data", DATA, "--epochs", "1", "--batch", "32",
                     "--save-dir", str(run_dir), "--quiet", "--no-plots"]) == 0
    return run_dir


@pytest.fixture
def nan_weights(monkeypatch):
    """Every checkpoint loads with NaN weights. (A NaN checkpoint file cannot be made honestly:
    saving refuses NaN and loading checks a checksum; this is what such a file would load as.)"""
    load = convnet.Net.from_checkpoint.__func__

    def from_checkpoint(cls, *args, **kwargs):
        net = load(cls, *args, **kwargs)
        for name in net.param_names():
            net.set_param(name, np.full_like(net.get_param(name), np.nan))
        return net

    monkeypatch.setattr(convnet.Net, "from_checkpoint", classmethod(from_checkpoint))


def grey_png(path):
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((12, 12)) * 255).astype(np.uint8)).save(path)
    return path


def test_cli_test_and_predict_refuse_a_nan_checkpoint(trained, nan_weights, capsys, tmp_path):
    rc, out, err = run(capsys, "test", trained)
    assert rc == 2 and "accuracy" not in out, out
    assert "convnet test: error: evaluate, test batch 1" in err and "non-finite output: layer" in err, err
    rc, out, err = run(capsys, "predict", trained, grey_png(tmp_path / "x.png"))
    assert rc == 2 and "%" not in out, out
    assert "convnet predict: error:" in err and "cost of nan" in err, err


# ---- 2. a training step that would poison the weights is refused before the update ----
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_train_step_refuses_a_non_finite_batch_naming_the_element(bad):
    net = convnet.Net(model())
    before = params(net)
    x, y = batch()
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"input 'data' holds -?(nan|inf) at \[1, 2, 3, 4\] \(NCHW\)"):
        net.train_step(x, y)
    assert_unchanged(net, before)
    assert net.step == 0


def test_train_step_refuses_non_finite_gradients_under_a_finite_cost():
    # Finite pixels near float32's maximum and tiny conv weights: every activation and the cost
    # are finite, but the conv weights' gradient (pixels times output gradients, summed)
    # overflows. Checking the cost alone let that gradient into the weights.
    def setup():
        net = convnet.Net(model())
        net.set_param("c.weights", np.full_like(net.get_param("c.weights"), 1e-37))
        net.set_param("f.weights", np.random.default_rng(0).normal(0, 1, net.get_param("f.weights").shape))
        return net, np.full((2, 3, 8, 8), 3.4e38, np.float32), np.array([0, 1])

    probe, x, y = setup()  # the premise: a finite cost, a non-finite gradient
    assert np.isfinite(probe.forward_backward(x, y)["objective"])
    assert not np.isfinite(probe.get_grad("c.weights")).all()
    net, x, y = setup()
    before = params(net)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient at step 0: the gradient of 'c.weights' "
                                                 r"holds (nan|inf).*parameters were not updated"):
        net.train_step(x, y)
    assert_unchanged(net, before)
    assert net.step == 0


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0])
def test_lr_scale_must_be_finite_and_non_negative(scale):
    net = convnet.Net(model())
    before = params(net)
    with pytest.raises(ValueError, match=r"lr_scale must be a finite number >= 0"):
        net.train_step(*batch(), lr_scale=scale)
    net.forward_backward(*batch())
    with pytest.raises(ValueError, match=r"lr_scale must be a finite number >= 0"):
        net.update(scale)
    assert_unchanged(net, before)


@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay"])
def test_set_hyperparams_refuses_nan_and_inf(key):
    net = convnet.Net(model())
    before = net.hyperparams("c.weights")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"set_hyperparams\('c.weights'\): {key} must be a finite number"):
            net.set_hyperparams("c.weights", **{key: bad})
    assert net.hyperparams("c.weights") == before


@pytest.mark.parametrize("option, value", [("rate", float("nan")), ("epsW", float("inf"))])
def test_model_float_options_must_be_finite(option, value):
    m = convnet.Model()
    m.input("data", channels=3, size=8)
    with pytest.raises(ValueError, match=rf"layer 'x': option '{option}' must be a finite number"):
        if option == "rate":
            m.dropout("x", "data", rate=value)
        else:
            m.fc("x", "data", outputs=2, epsW=value)


def test_model_json_numbers_beyond_double_are_a_value_error():
    # JSON cannot write Infinity; 1e999 overflows the parser (a RuntimeError before).
    text = model().to_json().replace('"outputs": 2', '"outputs": 2, "epsW": 1e999')
    with pytest.raises(ValueError, match=r"model definition is not valid JSON: .*number overflow parsing '1e999'"):
        convnet.Net(text)


def test_solver_and_trainer_floats_must_be_finite():
    net = convnet.Net(model())
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\), got nan"):
        net.set_solver("adamw", adam_betas=(float("nan"), 0.9))
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        net.set_solver("adamw", adam_eps=float("inf"))
    with pytest.raises(ValueError, match=r"not a number|finite"):
        convnet.Schedule("step[every=2;factor=nan]")
    x, y = batch(8)
    pipe = Pipeline(array_source(x, y.astype(np.int32), 2), batch=4, workers=1)
    with pytest.raises(ValueError, match=r"max_grad_norm must be a finite number >= 0"):
        convnet.Trainer(net, pipe, max_grad_norm=float("nan"), progress=False)


# ---- 3. integer options are range-checked, never wrapped ----
@pytest.mark.parametrize("value, shown", [(2**32 + 4, "4294967300"), (2**64 - 1, "18446744073709551615"),
                                          (-(2**40), "-1099511627776"), (1e30, "1e+30")])
def test_integer_options_do_not_wrap(value, shown):
    with pytest.raises(ValueError, match=rf"layer 'c': option 'filters' is {re.escape(shown)}, outside the range"):
        convnet.Net(model(filters=value))


def test_device_numbers_do_not_wrap():
    m = model()
    m.layers[2]["device"] = 2**32  # read as device 0 before
    with pytest.raises(ValueError, match=r"layer 'c': \"device\" is 4294967296, outside the range"):
        convnet.Net(m)


CC2 = os.path.join(os.path.dirname(__file__), "..", "data", "cuda-convnet2")


@pytest.mark.parametrize("old, new, where", [
    ("filters=64", "filters=4294967300", r"layers-w.cfg:13: section \[conv1\], key 'filters' is 4294967300"),
    ("outputs=10", "outputs=99999999999999999999999",
     r"layers-w.cfg:92: section \[fc10\], key 'outputs' is 99999999999999999999999"),
])
def test_cfg_integers_do_not_wrap(tmp_path, old, new, where):
    # int(strtol) read 4294967300 filters as 4; strtol saturated 10^23 outputs.
    text = open(os.path.join(CC2, "layers-cifar10-11pct.cfg")).read()
    (tmp_path / "layers-w.cfg").write_text(text.replace(old, new, 1))
    (tmp_path / "layer-params-w.cfg").write_text(open(os.path.join(CC2, "layer-params-cifar10-11pct.cfg")).read())
    with pytest.raises(ValueError, match=where + ", outside the range of an integer option"):
        convnet.Model.load(str(tmp_path / "layers-w.cfg"), size=24)


# ---- 4. the command's numeric arguments are range-checked ----
@pytest.mark.parametrize("argv, name", [
    (["predict", "RUN", "x.png", "--top-k", "-2"], "--top-k"),
    (["predict", "RUN", "x.png", "--top-k", "0"], "--top-k"),
    (["test", "RUN", "--batch", "0"], "--batch"),
    (["summary", "small_convnet", "--size", "4294967300"], "--size"),
    (["summary", "small_convnet", "--classes", "-1"], "--classes"),
    (["summary", "small_convnet", "--batch", "x"], "--batch"),
    (["convert", "a.json", "b.cfg", "--size", "0"], "--size"),
    (["experiment", "dropout", "--seeds", "0"], "--seeds"),
    (["experiment", "dropout", "--epochs", "-1"], "--epochs"),
])
def test_cli_numbers_out_of_range_name_the_argument(argv, name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert f"argument {name}:" in capsys.readouterr().err


def test_predict_top_k_beyond_the_classes(trained, capsys, tmp_path):
    with pytest.raises(SystemExit, match=r"--top-k 5 is outside \[1, 4\] \(the net has 4 classes\)"):
        cli.main(["predict", str(trained), str(grey_png(tmp_path / "x.png")), "--top-k", "5"])
    rc, out, _ = run(capsys, "predict", trained, tmp_path / "x.png", "--top-k", "4")
    assert rc == 0 and len(out.splitlines()) == 5, out
    rc, out, _ = run(capsys, "predict", trained, tmp_path / "x.png")  # the default: all 4, not an error
    assert rc == 0 and len(out.splitlines()) == 5, out


def test_top_k_api_range():
    net = convnet.Net(model())
    x, _ = batch()
    for k in (0, -2, 3, 1.5):
        with pytest.raises(ValueError, match=r"top_k: k must be an integer in \[1, 2\]"):
            net.top_k(x, k)
    assert [len(t) for t in net.top_k(x, 2)] == [2, 2]


# ---- 5. unreadable images: a clear error naming the file, no traceback ----
def bomb_jpeg(path):
    """A valid 16x16 JPEG whose header claims 65535 x 65535 pixels."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = (65535).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    return path


def truncated_png(path):
    grey_png(path)
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize("make", [
    bomb_jpeg,
    truncated_png,
    lambda p: (p.write_bytes(b""), p)[1],
    lambda p: (p.write_text("just text\n"), p)[1],
], ids=["decompression-bomb", "truncated", "empty", "text"])
def test_predict_unreadable_images_name_the_file(trained, tmp_path, make):
    path = make(tmp_path / "bad.png")
    with pytest.raises(SystemExit, match=rf"convnet: cannot read image {path}: \w+"):
        cli.main(["predict", str(trained), str(path)])
