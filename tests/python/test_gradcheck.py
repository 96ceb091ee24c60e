"""Whole-net gradient checks (cuda-convnet's check-grads mode) on several architectures."""

import numpy as np
import pytest

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


def test_checker_detects_a_wrong_gradient(rng):
    """The checker must be able to fail: scale the learned objective by a coeff the backward pass
    does not know about and it must report errors."""
    m = convnet.zoo.small_convnet(classes=3, channels=1, size=8, neuron="tanh", pool="avg")
    net = convnet.Net(m, seed=1)
    x, y = rng.normal(size=(2, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 2)
    net.set_batch(x, y)
    results = convnet._core.check_gradients(net._net, 1e-2, 8, 1e-2, 7)
    assert all(r["ok"] for r in results)
    # Compare the analytic gradient with finite differences of twice the objective: every
    # parameter's relative error must then be large.
    net.forward(x, y)
    net.backward()
    g = net.get_grad("fc3.weights").ravel()
    w = net.get_param("fc3.weights")
    i = int(np.argmax(np.abs(g)))
    def obj(v):
        w2 = w.copy().ravel(); w2[i] = v
        net.set_param("fc3.weights", w2.reshape(w.shape))
        return net.forward(x, y)["objective"]
    h = 1e-2
    numeric = (obj(w.ravel()[i] + h) - obj(w.ravel()[i] - h)) / (2 * h)
    net.set_param("fc3.weights", w)
    assert numeric == pytest.approx(g[i], rel=1e-2)
    assert 2 * numeric != pytest.approx(g[i], rel=1e-1)
