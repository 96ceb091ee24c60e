"""ONNX export (convnet.onnx_export, `convnet export`): exported nets run in onnxruntime on NCHW
float32 inputs and give convnet's own test-mode numbers; the models pass onnx.checker; layers ONNX
has no op for, and bad output names, are refused naming the culprit."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import convnet  # noqa: E402
from convnet import cli, onnx_export  # noqa: E402
from convnet.model import Model  # noqa: E402

DATA = "generated[count=256;classes=4;channels=1;size=16;seed=5]"


def pixels(shape, seed=0):
    """Random images in a realistic pixel range: [0, 255) minus a mean of 128, as the data
    pipelines feed nets (mean subtracted, unscaled)."""
    return (np.random.default_rng(seed).uniform(0, 255, shape) - 128).astype(np.float32)


def onnx_run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def assert_close(got, want, what, terms=0.0):
    """float32 agreement to 1e-5 relative. atol is 1e-5 of the output's largest magnitude: the
    two engines sum in different orders, so values that cancel to near 0 carry the rounding
    error of the large terms that made them (about 1e-7 of their scale per step), not 1e-5 of
    their own tiny size; anything off by a layout or formula error is off by far more. `terms`:
    the largest sum of |weight x input| a unit of the layer adds up, where that is larger than its
    output (raw pixels into tanh: terms near 100, outputs within 1); atol is then 1e-6 of it."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    atol = max(1e-5 * float(np.abs(want).max()), 1e-6 * terms)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=what)


def term_scale(net, model, layer):
    """The largest sum of |weight x input| over a unit of `layer` (0 for a layer without weights):
    max |input| times the largest L1 norm of a unit's weights (either orientation of a 2-D matrix,
    an upper bound)."""
    if f"{layer}.weights" not in net.param_names():
        return 0.0
    spec = next(entry for entry in json.loads(model.to_json())["layers"] if entry["name"] == layer)
    w = np.abs(net.get_param(f"{layer}.weights"))
    rows = w.reshape(w.shape[0], -1).sum(axis=1).max()
    if w.ndim == 2:
        rows = max(rows, w.sum(axis=0).max())
    return float(max(np.abs(net.output(name)).max() for name in spec["inputs"]) * rows)


def check_export(model, x, layers=(), devices="cpu", seed=3):
    """Builds `model`, exports it (the classifier's probabilities and `layers` as outputs), runs
    both engines on x and compares every output; returns the ONNX model."""
    net = convnet.Net(model, devices=devices, seed=seed)
    exported = onnx_export.build(net)
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == net.inputs  # labels are not graph inputs
    probs = net.predict(x)
    got = onnx_run(exported, {net.inputs[0]: x})
    assert list(got) == net.classifiers
    assert_close(got[net.classifiers[0]], probs, "probabilities")
    if layers:  # the hidden layers too: the probabilities alone can saturate and hide errors
        with_layers = onnx_export.build(net, outputs=list(layers))
        got = onnx_run(with_layers, {net.inputs[0]: x})
        for name in layers:
            assert_close(got[name], net.output(name), name, term_scale(net, model, name))
    return exported


def ops(model):
    return [n.op_type for n in model.graph.node]


def test_small_convnet_matches_onnxruntime():
    m = check_export(convnet.zoo.small_convnet(classes=10, size=28), pixels((5, 1, 28, 28)),
                     ["conv1", "pool1", "rnorm1", "conv2", "pool2", "fc3"])
    assert {"Conv", "Relu", "MaxPool", "LRN", "Gemm", "Softmax"} <= set(ops(m))
    assert m.opset_import[0].version == onnx_export.OPSET == 17


def test_fashion_alexnet_two_towers_is_one_graph():
    # Two towers (logical devices 0 and 1, here on two CPU lanes) joined at conv3 and the fc
    # layers: multi-input conv is a channel Concat, multi-input fc is Flatten + Concat; dropout
    # is left out (inference).
    m = check_export(convnet.zoo.fashion_alexnet(), pixels((4, 1, 28, 28), 1),
                     ["conv1a", "rnorm1b", "conv3a", "pool3b", "fc4a", "drop4b", "fc5"],
                     devices=["cpu:0", "cpu:1"])
    assert "Dropout" not in ops(m) and "Concat" in ops(m)


def test_alexnet_2012_exports_as_one_graph():
    check_export(convnet.zoo.alexnet_2012(classes=10, size=99, channels=3), pixels((2, 3, 99, 99), 2),
                 ["conv3b", "fc6a", "fc8"], devices=["cpu:0", "cpu:1"])


def test_fc_weights_need_no_permutation():
    # The control for the layout finding: a 3x3 spatial input to fc, exported as it is, matches;
    # the same weights reordered as if convnet flattened HWC instead of CHW do not. So the
    # comparison can tell the layouts apart, and CHW (no permutation) is the right one.
    model = Model()
    model.input("data", channels=4, size=3)
    model.labels("labels")
    model.fc("fc", "data", outputs=6, init="kaiming")
    model.softmax_cost("cost", "fc", "labels")
    net = convnet.Net(model)
    x = pixels((3, 4, 3, 3), 4)
    net.predict(x)
    exported = onnx_export.build(net, outputs=["fc"])
    assert_close(onnx_run(exported, {"data": x})["fc"], net.output("fc"), "fc")
    w = net.get_param("fc.weights")
    hwc = w.reshape(6, 4, 3, 3).transpose(0, 2, 3, 1).reshape(6, 36)
    init = next(i for i in exported.graph.initializer if i.name == "fc.weights")
    init.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(hwc), "fc.weights"))
    with pytest.raises(AssertionError):
        assert_close(onnx_run(exported, {"data": x})["fc"], net.output("fc"), "fc")


def pooling_net(image, pool):
    m = Model()
    m.input("data", channels=3, size=image)
    m.labels("labels")
    m.conv("conv", "data", filters=4, size=3, padding=1, neuron="tanh", init="kaiming")
    m.pool("pool", "conv", **pool)
    m.fc("fc", "pool", outputs=5, init="xavier")
    m.softmax_cost("cost", "fc", "labels")
    return m


@pytest.mark.parametrize("image,pool", [
    (9, dict(size=3, stride=2, pool="avg", padding=1, count_padding=False)),
    (9, dict(size=3, stride=2, pool="avg", padding=1, count_padding=True)),
    (10, dict(size=3, stride=2, pool="max", ceil=True)),
    (10, dict(size=3, stride=2, pool="avg", ceil=True)),
    # ceil with padding: the last window runs past the padded edge (clipped; averages count
    # the padding, or not, but never the cells past it)
    (10, dict(size=3, stride=2, pool="avg", ceil=True, padding=1, count_padding=True)),
    (10, dict(size=3, stride=2, pool="avg", ceil=True, padding=1, count_padding=False)),
    (10, dict(size=3, stride=2, pool="max", ceil=True, padding=1)),
    # ceil would start a last window inside the right padding: convnet drops it
    (5, dict(size=2, stride=2, pool="max", ceil=True, padding=1)),
    (5, dict(size=2, stride=2, pool="avg", ceil=True, padding=1, count_padding=True)),
    (8, dict(size=2, pool="avg")),  # stride defaults to size
], ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()) if isinstance(p, dict) else str(p))
def test_pooling(image, pool):
    check_export(pooling_net(image, pool), pixels((3, 3, image, image), 5), ["conv", "pool", "fc"])


@pytest.mark.skipif("ceil" not in {o["name"] for o in convnet.layer_types()["conv"]["options"]},
                    reason="this build's conv layer has no ceil option")
@pytest.mark.parametrize("padding", [0, 1])
def test_conv_ceil_reads_zeros_past_the_edge(padding):
    # cuda-convnet2's rounding: 1 + ceil((10 + 2 padding - 3) / 2) positions, the last one partly
    # past the bottom/right edge; the export pads the end with the zeros it reads there.
    m = Model()
    m.input("data", channels=2, size=10)
    m.labels("labels")
    m.conv("conv", "data", filters=3, size=3, stride=2, padding=padding, ceil=True, init="kaiming")
    m.fc("fc", "conv", outputs=3, init="xavier")
    m.softmax_cost("cost", "fc", "labels")
    check_export(m, pixels((2, 2, 10, 10), 11), ["conv", "fc"])


@pytest.mark.parametrize("size", [5, 3, 4])
def test_lrn_alpha_is_not_divided_by_size(size):
    # convnet's alpha multiplies the plain sum of squares; ONNX LRN's is divided by size. Large
    # alpha so the normalisation matters; an even window (no ONNX LRN of the same centring) is
    # built from Mul/Conv/Pow instead.
    m = Model()
    m.input("data", channels=7, size=6)
    m.labels("labels")
    m.lrn("norm", "data", size=size, alpha=1e-3, beta=0.75, k=2.0)
    m.fc("fc", "norm", outputs=3, init="xavier")
    m.softmax_cost("cost", "fc", "labels")
    exported = check_export(m, pixels((2, 7, 6, 6), 6), ["norm", "fc"])
    assert ("LRN" in ops(exported)) == (size % 2 == 1)


def test_neurons_sum_split_concat_groups():
    # Every neuron, fused (conv, fc) and as layers; a sum with coeffs; split and concat; grouped
    # conv; layers without biases; several fc inputs of different spatial sizes.
    m = Model()
    m.input("data", channels=4, size=8)
    m.labels("labels")
    m.conv("c1", "data", filters=8, size=3, padding=1, neuron="leaky_relu", slope=0.1, init="kaiming")
    m.conv("c2", "c1", filters=8, size=3, padding=1, groups=2, neuron="logistic", init="kaiming")
    m.conv("c3", "c1", filters=8, size=1, neuron="softsign", bias=False, init="kaiming")
    m.sum("s", ["c2", "c3", "c1"], coeffs=[0.5, -2.0, 1.0])
    m.neuron("t", "s", neuron="tanh")
    m.split("lo", "t", start=0, count=3)
    m.split("hi", "t", start=3, count=5)
    m.concat("cat", ["hi", "lo"])
    m.neuron("r", "cat", neuron="relu")
    m.pool("p", "r", size=2)
    m.dropout("d", "p", rate=0.3)
    m.fc("f1", ["d", "t"], outputs=12, neuron="relu", init="kaiming")
    m.fc("f2", "f1", outputs=4, bias=False, init="xavier")
    m.softmax_cost("cost", "f2", "labels")
    exported = check_export(m, pixels((3, 4, 8, 8), 7) / 64,
                            ["c1", "c2", "c3", "s", "t", "lo", "hi", "cat", "r", "d", "f1", "f2"])
    assert {"LeakyRelu", "Sigmoid", "Softsign", "Tanh", "Relu", "Sum", "Slice", "Concat"} <= set(ops(exported))


@pytest.mark.skipif("inverted" not in {o["name"] for o in convnet.layer_types()["dropout"]["options"]},
                    reason="the engine predates dropout's inverted option")
def test_the_papers_dropout_scales_at_test_time():
    # cuda-convnet2's dropout2 (inverted=false): the test-time graph multiplies by 1 - rate.
    m = Model()
    m.input("data", channels=3, size=8)
    m.labels("labels")
    m.fc("f1", "data", outputs=6, neuron="relu", init="kaiming")
    m.dropout("d", "f1", rate=0.25, inverted=False)
    m.fc("f2", "d", outputs=3, init="xavier")
    m.softmax_cost("cost", "f2", "labels")
    exported = check_export(m, pixels((2, 3, 8, 8), 5) / 64, ["f1", "d"])
    assert "Mul" in ops(exported)


def test_classifier_output_is_the_probabilities():
    net = convnet.Net(convnet.zoo.small_convnet(classes=4, size=16))
    x = pixels((6, 1, 16, 16), 8) / 128  # a small range, so the probabilities are not one-hot
    out = onnx_run(onnx_export.build(net), {"data": x})["cost"]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert 0.01 < out.max() < 0.99
    assert_close(out, net.predict(x), "probabilities")


def test_net_without_classifier_gives_its_last_layer():
    # sum2_cost is a training objective, not a prediction: the layer it reads is the output.
    m = Model()
    m.input("data", channels=2, size=6)
    m.conv("c", "data", filters=3, size=3, padding=1, neuron="relu", init="kaiming")
    m.fc("f", "c", outputs=4, init="xavier")
    m.sum2_cost("cost", "f")
    net = convnet.Net(m)
    x = pixels((3, 2, 6, 6), 12)
    net.forward(x, train=False)
    exported = onnx_export.build(net)
    assert [o.name for o in exported.graph.output] == ["f"]
    assert_close(onnx_run(exported, {"data": x})["f"], net.output("f"), "f")


class _WithLayer:
    """A Net whose layer list shows one more layer, as a checkpoint of a newer engine would."""

    def __init__(self, net, extra):
        self._net, self._extra = net, extra

    def layers(self):
        return self._net.layers() + [self._extra]

    def __getattr__(self, name):
        return getattr(self._net, name)


@pytest.mark.parametrize("kind", ["local", "rnorm", "something_new"])
def test_unsupported_layer_is_named(kind):
    net = convnet.Net(convnet.zoo.small_convnet(classes=4, size=16))
    extra = dict(name="odd_one", type=kind, role="hidden", classifies=False, options={}, inputs=["pool2"],
                 shape=(32, 3, 3))
    with pytest.raises(onnx_export.UnsupportedLayerError, match=f"layer 'odd_one' has type '{kind}'"):
        onnx_export.build(_WithLayer(net, extra))


def test_unknown_neuron_and_output_are_named():
    net = convnet.Net(convnet.zoo.small_convnet(classes=4, size=16))
    with pytest.raises(ValueError, match="'nope' is not a layer the graph computes"):
        onnx_export.build(net, outputs=["nope"])
    layers = net.layers()
    conv = next(l for l in layers if l["name"] == "conv2")
    conv["options"]["neuron"] = "abs"

    class Renamed(_WithLayer):
        def layers(self):
            return layers

    with pytest.raises(ValueError, match="layer 'conv2' \\(conv\\) has neuron 'abs'"):
        onnx_export.build(Renamed(net, None))


def test_export_writes_a_file(tmp_path):
    net = convnet.Net(convnet.zoo.small_convnet(classes=4, size=16))
    path = tmp_path / "m.onnx"
    onnx_export.export(net, str(path))
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    x = pixels((2, 1, 16, 16), 9)
    assert_close(onnx_run(loaded, {"data": x})["cost"], net.predict(x), "probabilities")


# ---- the command ----
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder: small_convnet trained one short epoch on generated 16x16 images."""
    d = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "small_convnet", "--data", DATA, "--epochs", "1", "--batch", "32",
                     "--save-dir", str(d), "--quiet", "--no-plots"]) == 0
    return d


def test_cli_export_onnx(run_dir, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert cli.main(["export", str(run_dir), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    _, net, _ = cli.load_run(str(run_dir), "cpu")  # the trained weights, as `convnet test` loads them
    x = pixels((4, 1, 16, 16), 10)
    assert_close(onnx_run(model, {"data": x})["cost"], net.predict(x), "probabilities")


def test_cli_export_bad_extension(run_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"x\.pt.*\.onnx.*\.safetensors"):
        cli.main(["export", str(run_dir), str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()


def test_cli_export_unsupported_layer_names_it(run_dir, tmp_path, capsys, monkeypatch):
    # The engine has no layer type the exporter lacks yet, so take lrn away from the exporter:
    # the command fails naming small_convnet's lrn layer and its type, and writes nothing.
    monkeypatch.setattr(onnx_export, "SUPPORTED", tuple(t for t in onnx_export.SUPPORTED if t != "lrn"))
    rc = cli.main(["export", str(run_dir), str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "layer 'rnorm1' has type 'lrn'" in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_safetensors_calls_torchvision_weights(run_dir, tmp_path, capsys, monkeypatch):
    # convnet.torchvision_weights is its own module; a stand-in records the call the command makes.
    import sys
    import types
    calls = []
    fake = types.ModuleType("convnet.torchvision_weights")
    fake.export_state_dict = lambda net, path: calls.append((net, path))
    monkeypatch.setitem(sys.modules, "convnet.torchvision_weights", fake)
    monkeypatch.setattr(convnet, "torchvision_weights", fake, raising=False)
    out = str(tmp_path / "w.safetensors")
    assert cli.main(["export", str(run_dir), out]) == 0
    assert len(calls) == 1 and isinstance(calls[0][0], convnet.Net) and calls[0][1] == out


def test_cli_export_safetensors_without_the_module_says_so(run_dir, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "convnet.torchvision_weights", None)  # import fails as if absent
    monkeypatch.delattr(convnet, "torchvision_weights", raising=False)
    with pytest.raises(SystemExit, match="convnet.torchvision_weights"):
        cli.main(["export", str(run_dir), str(tmp_path / "w.safetensors")])
