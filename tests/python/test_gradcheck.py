"""Whole-net gradient checks (cuda-convnet's check-grads mode) on several architectures. That the
checker fails on a wrong gradient is shown in C++ (tests/cpp/test_layers.cpp, LayerCheckers), with
a layer whose backward pass is wrong registered by the test."""

import numpy as np

import convnet


def check(model, x, y, **kw):
    net = convnet.Net(model, seed=11)
    results = convnet.check_gradients(net, x, y, verbose=True, **kw)
    bad = [r for r in results if not r["ok"]]
    assert not bad, f"gradient check failed: {bad}"
    assert all(r["max_abs_gradient"] > 0 for r in results)
    return results


def test_smooth_net(rng):
    m = convnet.zoo.small_convnet(classes=5, channels=2, size=12, neuron="tanh", pool="avg")
    check(m, rng.normal(size=(4, 2, 12, 12)).astype(np.float32), rng.integers(0, 5, 4), step=1e-2)


def test_relu_max_pool_net(rng):
    # Kinks: a step that crosses a ReLU or a max switch spoils single elements' differences; the
    # verdict is on the whole sampled gradient vector.
    m = convnet.zoo.small_convnet(classes=5, channels=1, size=10, neuron="relu", pool="max")
    check(m, rng.normal(size=(3, 1, 10, 10)).astype(np.float32), rng.integers(0, 5, 3),
          step=1e-3, samples=48, tolerance=3e-2)


def test_two_tower_net_with_dropout(rng):
    """A miniature AlexNet-2012: two towers, LRN, overlapping pools, dropout, joins."""
    m = convnet.Model()
    m.input("data", channels=3, size=15)
    m.labels("labels")
    for t, dev in (("a", 0), ("b", 1)):
        m.conv(f"conv1{t}", "data", filters=4, size=3, stride=2, padding=1, neuron="tanh", device=dev, initW=0.3)
        m.lrn(f"rnorm1{t}", f"conv1{t}", size=3, alpha=0.5, device=dev)
        m.pool(f"pool1{t}", f"rnorm1{t}", size=3, stride=2, pool="avg", device=dev)
    for t, dev in (("a", 0), ("b", 1)):
        m.conv(f"conv2{t}", ["pool1a", "pool1b"], filters=4, size=3, padding=1, neuron="logistic", device=dev, initW=0.3)
        m.fc(f"fc3{t}", ["conv2a", "conv2b"] if t == "a" else [f"conv2{t}"], outputs=6, neuron="tanh", device=dev, initW=0.2)
        m.dropout(f"drop3{t}", f"fc3{t}", rate=0.5, device=dev)
    m.fc("fc4", ["drop3a", "drop3b"], outputs=5, initW=0.3)
    m.softmax_cost("cost", "fc4", "labels")
    check(m, rng.normal(size=(4, 3, 15, 15)).astype(np.float32), rng.integers(0, 5, 4), step=1e-2)
