"""The layer-level API: backward from given output gradients, gradients with respect to inputs."""

import numpy as np
import pytest

import convnet


def model(lrn=False, replicas=False):
    m = convnet.Model()
    m.input("data", channels=2, size=8)
    m.labels("labels")
    spread = {"device": [0, 1]} if replicas else {}
    m.conv("conv1", "data", filters=4, size=3, padding=1, neuron="tanh", initW=0.3, initB=0.1, **spread)
    if lrn:  # an LRN read only by a pool: the two go back as one (fusion) in a plain backward
        m.lrn("norm1", "conv1", size=3, alpha=0.5)
    m.pool("pool1", "norm1" if lrn else "conv1", size=2, stride=2, pool="avg", **spread)
    m.fc("fc2", "pool1", outputs=5, initW=0.2)
    m.softmax_cost("cost", "fc2", "labels")
    return m


def batch(rng, n=6):
    return rng.normal(size=(n, 2, 8, 8)).astype(np.float32), rng.integers(0, 5, n)


def grads(net):
    return {name: net.get_grad(name).copy() for name in net.param_names()}


def test_backward_from_the_logits_gradient_equals_the_cost_backward(rng):
    """Softmax cross-entropy's gradient at the logits is (p - onehot(y)) / N: started there,
    backward gives every parameter the gradient the cost layer gives."""
    net = convnet.Net(model())
    x, y = batch(rng)
    net.forward(x, y)
    p = net.output("cost").reshape(len(y), -1).astype(np.float64)
    net.backward()
    want = grads(net)
    dy = (p - np.eye(5)[y]) / len(y)
    net.backward(grads={"fc2": dy})  # N x C for a C x 1 x 1 output
    got = grads(net)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert np.abs(got["conv1.weights"]).max() > 0


def test_gradients_from_two_layers_add(rng):
    """Given gradients at fc2 and at pool1 upstream of it: the sum of each one's gradients."""
    net = convnet.Net(model())
    x, y = batch(rng)
    net.forward(x, y)
    d_fc = rng.normal(size=(6, 5)).astype(np.float32)
    d_pool = rng.normal(size=(6,) + net.output_shape("pool1")).astype(np.float32)
    net.backward(grads={"fc2": d_fc})
    one = grads(net)
    net.backward(grads={"pool1": d_pool})
    other = grads(net)
    assert np.abs(other["fc2.weights"]).max() == 0  # fc2 is downstream of pool1: no gradient
    net.backward(grads={"fc2": d_fc, "pool1": d_pool})
    both = grads(net)
    for name in both:
        np.testing.assert_allclose(both[name], one[name] + other[name], rtol=1e-5, atol=1e-6, err_msg=name)


def finite_difference(loss, x, index, h=1e-2):
    up, down = x.copy(), x.copy()
    up[index] += h
    down[index] -= h
    return (loss(up) - loss(down)) / (2 * h)


@pytest.mark.parametrize("start", ["cost", "pool1"])
def test_input_grad_matches_finite_differences(rng, start):
    """d objective / d x (from the cost) and d <dy, pool1> / d x (from a given dy), against
    central differences of the float32 forward pass, summed in float64."""
    net = convnet.Net(model())
    x, y = batch(rng)
    dy = rng.normal(size=(6,) + net.output_shape("pool1"))

    def loss(xs):
        stats = net.forward(xs, y, train=False)
        if start == "cost":
            return stats["objective"]
        return float((net.output("pool1").astype(np.float64) * dy).sum())

    loss(x)
    net.backward(grads=None if start == "cost" else {"pool1": dy}, input_grads=["data"])
    g = net.input_grad("data")
    assert g.shape == x.shape
    scale = np.abs(g).max()
    assert scale > 0
    for flat in rng.choice(x.size, 12, replace=False):
        index = np.unravel_index(flat, x.shape)
        fd = finite_difference(loss, x, index)
        assert abs(fd - g[index]) < 1e-2 * scale + 1e-4, (index, fd, g[index])


def test_given_gradients_at_an_lrn_and_its_pool_go_back_unfused(rng):
    """An LRN read only by a pool goes back through both at once in a plain backward; with a
    gradient given at the LRN (or its pool) each goes back on its own, as with fusion off."""
    x, y = batch(rng)
    fused, plain = convnet.Net(model(lrn=True)), convnet.Net(model(lrn=True))
    plain.fusion = False
    assert fused.fused_layers() == ["norm1"]
    d_norm = rng.normal(size=(6,) + fused.output_shape("norm1")).astype(np.float32)
    d_fc = rng.normal(size=(6, 5)).astype(np.float32)
    for net in (fused, plain):
        net.forward(x, y)
        net.backward(grads={"norm1": d_norm, "fc2": d_fc}, input_grads="data")
    for name, g in grads(plain).items():
        np.testing.assert_allclose(grads(fused)[name], g, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(fused.input_grad("data"), plain.input_grad("data"), rtol=1e-6, atol=1e-7)


def test_replicas_take_their_part_of_a_given_gradient(rng):
    """Replicated conv1 and pool1 on cpu:0, cpu:1: a gradient given at pool1 is split among the
    replicas; the parameters' and the input's gradients are one device's."""
    x, y = batch(rng, 7)  # 7 over 2 replicas: 4 and 3
    one, two = convnet.Net(model(replicas=True)), convnet.Net(model(replicas=True), devices=["cpu:0", "cpu:1"])
    d_pool = rng.normal(size=(7,) + one.output_shape("pool1")).astype(np.float32)
    for net in (one, two):
        net.forward(x, y)
        net.backward(grads={"pool1": d_pool}, input_grads=["data"])
    for name, g in grads(one).items():
        np.testing.assert_allclose(grads(two)[name], g, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(two.input_grad("data"), one.input_grad("data"), rtol=1e-6, atol=1e-7)


def test_bad_requests_are_named(rng):
    net = convnet.Net(model())
    x, y = batch(rng)
    net.forward(x, y)
    with pytest.raises(ValueError, match=r"no layer named 'nope'"):
        net.backward(grads={"nope": np.zeros((6, 5))})
    with pytest.raises(ValueError, match=r"layer 'cost' is a cost layer"):
        net.backward(grads={"cost": np.zeros((6, 5, 1, 1))})
    with pytest.raises(ValueError, match=r"layer 'data' is an input layer: no gradient starts there"):
        net.backward(grads={"data": x})
    with pytest.raises(ValueError, match=r"the gradient for layer 'fc2' has shape \(6, 4\), its output "
                                         r"\(6, 5, 1, 1\) \(NCHW, or N x C\)"):
        net.backward(grads={"fc2": np.zeros((6, 4))})
    with pytest.raises(ValueError, match=r"the gradient for layer 'fc2' has shape \(5, 5, 1, 1\), its output "
                                         r"\(6, 5, 1, 1\)"):
        net.backward(grads={"fc2": np.zeros((5, 5, 1, 1))})  # another batch
    with pytest.raises(ValueError, match=r"'labels' is not an input layer"):
        net.backward(input_grads=["labels"])
    net.backward()
    with pytest.raises(ValueError, match=r"no gradient with respect to 'data' was asked for"):
        net.input_grad("data")


def test_pool_padding_options():
    """padding= as PyTorch's; count_padding chooses the divisor of a padded average, and is an
    error where it has no effect."""
    m = convnet.Model()
    m.input("data", channels=1, size=2)
    m.pool("incl", "data", size=2, stride=1, padding=1, pool="avg")
    m.pool("excl", "data", size=2, stride=1, padding=1, pool="avg", count_padding=False)
    m.pool("max", "data", size=2, stride=1, padding=1, pool="max")
    net = convnet.Net(m)
    x = np.array([[[[-1, -2], [-3, -4]]]], np.float32)
    net.forward(x, train=False)
    np.testing.assert_allclose(net.output("incl")[0, 0], [[-0.25, -0.75, -0.5], [-1, -2.5, -1.5], [-0.75, -1.75, -1]])
    np.testing.assert_allclose(net.output("excl")[0, 0], [[-1, -1.5, -2], [-2, -2.5, -3], [-3, -3.5, -4]])
    np.testing.assert_array_equal(net.output("max")[0, 0], [[-1, -1, -2], [-1, -1, -2], [-3, -3, -4]])
    bad = convnet.Model()
    bad.input("data", channels=1, size=4)
    bad.pool("p", "data", size=2, padding=1, pool="max", count_padding=False)
    with pytest.raises(ValueError, match=r"layer 'p': option 'count_padding' has no effect"):
        convnet.Net(bad)
    bad = convnet.Model()
    bad.input("data", channels=1, size=4)
    bad.pool("p", "data", size=2, padding=2)
    with pytest.raises(ValueError, match=r"pool padding must be in \[0, size/2\] \(1 for size 2\), got 2"):
        convnet.Net(bad)
