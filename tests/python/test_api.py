"""The Python API: model builder, Net on numpy batches (NCHW in and out), parameters."""

import json

import numpy as np
import pytest

import convnet


def tiny_model(neuron="tanh"):
    m = convnet.Model()
    m.input("data", channels=2, size=6)
    m.labels("labels")
    m.conv("conv1", "data", filters=3, size=3, padding=1, neuron=neuron, initW=0.2)
    m.pool("pool1", "conv1", size=2, stride=2, pool="avg")
    m.fc("fc2", "pool1", outputs=4, initW=0.2)
    m.softmax_cost("cost", "fc2", "labels")
    return m


def test_model_round_trips_through_json(tmp_path):
    m = tiny_model()
    path = tmp_path / "model.json"
    m.save(str(path))
    again = convnet.Model.load(str(path))
    assert again.layers == m.layers
    assert json.loads(m.to_json())["layers"][2]["filters"] == 3
    net = convnet.Net(again)
    assert json.loads(net._net.model_json())["layers"][2]["name"] == "conv1"


def test_layers_report_shapes_and_parameters():
    net = convnet.Net(tiny_model())
    layers = {l["name"]: l for l in net.layers()}
    assert layers["conv1"]["shape"] == (3, 6, 6)
    assert layers["pool1"]["shape"] == (3, 3, 3)
    assert layers["fc2"]["shape"] == (4, 1, 1)
    assert layers["conv1"]["params"] == 3 * 2 * 3 * 3 + 3
    assert net.parameter_count == 57 + 4 * 27 + 4
    assert net.param_names() == ["conv1.weights", "conv1.biases", "fc2.weights", "fc2.biases"]
    assert net.get_param("conv1.weights").shape == (3, 2, 3, 3)  # F x C x K x K, as PyTorch
    assert net.get_param("fc2.weights").shape == (4, 27)


def test_nchw_in_nchw_out(rng):
    net = convnet.Net(tiny_model(neuron="linear"))
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    net.forward(x, np.arange(5) % 4, train=False)
    np.testing.assert_array_equal(net.output("data"), x)
    # conv1 with linear neuron, checked against a direct numpy convolution in NCHW.
    w, b = net.get_param("conv1.weights"), net.get_param("conv1.biases")
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    want = np.zeros((5, 3, 6, 6))
    for ky in range(3):
        for kx in range(3):
            want += np.einsum("nchw,fc->nfhw", xp[:, :, ky:ky + 6, kx:kx + 6], w[:, :, ky, kx])
    want += b[None, :, None, None]
    np.testing.assert_allclose(net.output("conv1"), want, rtol=1e-5, atol=1e-5)


def test_predict_returns_probabilities(rng):
    net = convnet.Net(tiny_model())
    p = net.predict(rng.normal(size=(7, 2, 6, 6)).astype(np.float32))
    assert p.shape == (7, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p > 0).all()


def test_set_param_and_state_dict(rng):
    net = convnet.Net(tiny_model())
    state = net.state_dict()
    new_w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    net.set_param("conv1.weights", new_w)
    np.testing.assert_array_equal(net.get_param("conv1.weights"), new_w)
    net.load_state_dict(state)
    np.testing.assert_array_equal(net.get_param("conv1.weights"), state["conv1.weights"])


def test_arrays_of_other_dtypes_and_layouts_are_converted(rng):
    """float64, float16, uint8 and non-contiguous arrays give what their float32 copies give."""
    net = convnet.Net(tiny_model())
    x = rng.normal(size=(5, 2, 6, 6))
    want = net.predict(x.astype(np.float32))
    np.testing.assert_array_equal(net.predict(x), want)  # float64
    nhwc = np.ascontiguousarray(x.astype(np.float32).transpose(0, 2, 3, 1))
    strided = nhwc.transpose(0, 3, 1, 2)  # NCHW view of NHWC memory: not C-contiguous
    assert not strided.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(net.predict(strided), want)
    pixels = rng.integers(0, 256, size=(5, 2, 6, 6)).astype(np.uint8)
    np.testing.assert_array_equal(net.predict(pixels), net.predict(pixels.astype(np.float32)))
    half = x.astype(np.float16)
    np.testing.assert_array_equal(net.predict(half), net.predict(half.astype(np.float32)))
    w = rng.normal(size=(3, 2, 3, 3))
    net.set_param("conv1.weights", w)  # float64
    np.testing.assert_array_equal(net.get_param("conv1.weights"), w.astype(np.float32))
    net.set_param("conv1.weights", w.astype(np.float32).T.copy().T)  # Fortran order
    np.testing.assert_array_equal(net.get_param("conv1.weights"), w.astype(np.float32))
    labels = rng.integers(0, 4, 5)
    loss32 = convnet.Net(tiny_model()).forward(x.astype(np.float32), labels)["objective"]
    assert convnet.Net(tiny_model()).forward(x, labels)["objective"] == loss32


def test_train_step_changes_parameters_and_sets_gradients(rng):
    net = convnet.Net(tiny_model())
    before = net.get_param("fc2.weights")
    stats = net.train_step(rng.normal(size=(8, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, 8))
    assert stats["batch"] == 8
    assert 0 <= stats["costs"][0]["top1_error"] <= 1
    assert stats["costs"][0]["top5_error"] == 0  # 4 classes: the label is always in the top 5
    assert np.abs(net.get_grad("fc2.weights")).max() > 0
    assert not np.array_equal(before, net.get_param("fc2.weights"))
    assert net.step == 1


def test_hyperparams_are_read_and_set():
    m = tiny_model()
    m.layers[2].update(epsW=0.05, momW=0.5, wc=0.001)
    net = convnet.Net(m)
    assert net.hyperparams("conv1.weights") == pytest.approx({"lr": 0.05, "momentum": 0.5, "weight_decay": 0.001})
    assert net.hyperparams("conv1.biases")["weight_decay"] == 0.0
    net.set_hyperparams("conv1.weights", lr=0.1)
    assert net.hyperparams("conv1.weights")["lr"] == pytest.approx(0.1)


def test_batch_size_can_change_between_steps(rng):
    net = convnet.Net(tiny_model())
    for n in (4, 1, 9):
        net.train_step(rng.normal(size=(n, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, n))
        assert net.output("fc2").shape == (n, 4, 1, 1)


def test_two_logical_devices_on_the_cpu_match_one(rng):
    m = tiny_model()
    m.layers[4]["device"] = 1  # fc2 on logical device 1
    x, y = rng.normal(size=(6, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, 6)
    a = convnet.Net(tiny_model(), seed=2)
    b = convnet.Net(m, devices=["cpu:0", "cpu:1"], seed=2)
    for net in (a, b):
        net.train_step(x, y)
    for name in a.param_names():
        np.testing.assert_array_equal(a.get_param(name), b.get_param(name))


def test_runtime_information():
    assert "OpenBLAS" in convnet.blas_name()
    assert convnet.num_threads() >= 1
    assert isinstance(convnet.cuda_compiled(), bool)
    assert convnet.cuda_device_count() >= 0
    assert "conv" in convnet.layer_types()


def test_lrn_pool_fusion_gives_the_same_numbers():
    """fashion_alexnet's LRN layers are each read by one pool: fused by default, and a step with
    fusion off gives the same gradients, bit for bit (CPU)."""
    model = convnet.zoo.fashion_alexnet(classes=4, channels=1, size=16)
    fused, separate = convnet.Net(model, seed=2), convnet.Net(model, seed=2)
    separate.fusion = False
    assert fused.fusion and not separate.fusion
    assert sorted(fused.fused_layers()) == ["rnorm1a", "rnorm1b", "rnorm2a", "rnorm2b"]
    assert separate.fused_layers() == []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    for net in (fused, separate):
        net._net.set_profiling(True)
        net.forward_backward(x, y)
    pool_calls = {n: {t["layer"]: t["backward_calls"] for t in net._net.layer_times()}["pool1a"]
                  for n, net in (("fused", fused), ("separate", separate))}
    assert pool_calls == {"fused": 0, "separate": 1}
    for name in fused.param_names():
        np.testing.assert_array_equal(fused.get_grad(name), separate.get_grad(name), err_msg=name)
    assert np.abs(fused.get_grad("conv1a.weights")).max() > 0

