"""Several devices from Python: a Model built with replicated layers (device=[0, 1], data
parallel inside one process) on two CPU devices trains what the same model on one device
trains, up to float32 summation order, and a replicated layer's output is the whole batch."""

import numpy as np

import convnet


def model(replicas):
    m = convnet.Model()
    x = m.input("data", channels=3, size=12)
    y = m.labels("labels")
    h = m.conv("conv1", x, filters=8, size=3, padding=1, neuron="relu", initW=0.1, initB=0.1, device=replicas)
    h = m.pool("pool1", h, size=2, stride=2, device=replicas)
    h = m.fc("fc2", h, outputs=16, neuron="relu", initW=0.05, initB=0.1, device=replicas)
    h = m.dropout("drop2", h, rate=0.5, device=replicas)
    h = m.fc("fc3", h, outputs=5, initW=0.05)
    m.softmax_cost("cost", h, y)
    return m


def test_replicated_layers_train_what_one_device_trains():
    rng = np.random.default_rng(3)
    one = convnet.Net(model(0), devices="cpu", seed=5)
    two = convnet.Net(model([0, 1]), devices=["cpu:0", "cpu:1"], seed=5)
    assert {l["device"] for l in two.layers()} == {"cpu:0"}  # a replicated layer shows its first
    for _ in range(3):
        x = rng.uniform(-120, 130, size=(8, 3, 12, 12)).astype(np.float32)  # NCHW, pixel range
        y = rng.integers(0, 5, size=8).astype(np.float32)
        a, b = one.train_step(x, y), two.train_step(x, y)
        assert abs(a["objective"] - b["objective"]) <= 1e-5 * abs(a["objective"])
    for name in ("conv1.weights", "fc2.weights", "fc3.biases"):
        np.testing.assert_allclose(two.get_param(name), one.get_param(name), rtol=1e-5, atol=1e-7)
    out_one, out_two = one.output("drop2"), two.output("drop2")
    assert out_two.shape[0] == 8  # every replica's examples, gathered
    np.testing.assert_allclose(out_two, out_one, rtol=1e-5, atol=1e-6)
