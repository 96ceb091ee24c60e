"""VGG's test methods: fc layers as convolutions give the fc net's scores, dense evaluation at a
single position is the cropped evaluation, every position of the map is the crop at its offset;
and a deeper VGG initialised from a trained shallower one."""
import numpy as np
import pytest

import convnet
from convnet import Model, Net, dense, zoo


def small_vgg(size=16, padding=1, classes=5):
    """VGG's shape in miniature: conv-pool blocks, then fc-dropout-fc-dropout-fc."""
    m = Model()
    m.input("data", channels=3, size=size)
    m.labels("labels")
    h = m.conv("conv1_1", "data", filters=6, size=3, padding=padding, neuron="relu", init="kaiming")
    h = m.pool("pool1", h, size=2, stride=2)
    h = m.conv("conv2_1", h, filters=8, size=3, padding=padding, neuron="relu", init="kaiming")
    h = m.pool("pool2", h, size=2, stride=2)
    h = m.fc("fc6", h, outputs=16, neuron="relu", init="kaiming", initB=0.1)
    h = m.dropout("drop6", h, rate=0.5)
    h = m.fc("fc7", h, outputs=16, neuron="relu", init="kaiming", initB=0.1)
    h = m.dropout("drop7", h, rate=0.5)
    m.fc("fc8", h, outputs=classes, init="xavier")
    m.softmax_cost("cost", "fc8", "labels")
    return m


def dense_net(net, model, size):
    """The convolutional form of `model` at `size` with `net`'s weights."""
    conv_net = Net(dense.convolutional_model(model, size=size))
    dense.copy_weights(net, conv_net)
    return conv_net


def images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (n, 3, size, size)).astype(np.float32)


def test_fc_as_conv_gives_the_fc_nets_scores():
    model = small_vgg()
    net = Net(model, seed=3)
    conv_net = Net(dense.convolutional_model(model, size=16))
    assert [l["type"] for l in conv_net.layers() if l["name"].startswith("fc")] == ["conv"] * 3
    assert conv_net.output_shape("fc6")[:3] == (16, 1, 1)
    dense.copy_weights(net, conv_net)
    x = images(4, 16)
    scores = conv_net.predict(x, output="fc8")  # N x K x 1 x 1
    np.testing.assert_allclose(scores[:, :, 0, 0], net.predict(x, output="fc8").reshape(4, -1), rtol=1e-5, atol=1e-6)
    # dense evaluation at the single position is the cropped evaluation; with flips, the mean of both
    np.testing.assert_allclose(dense.dense_scores(conv_net, x, flips=False), net.predict(x), rtol=1e-5, atol=1e-7)
    both = (net.predict(x) + net.predict(np.ascontiguousarray(x[..., ::-1]))) / 2
    np.testing.assert_allclose(dense.dense_scores(conv_net, x), both, rtol=1e-5, atol=1e-7)


def test_every_position_of_the_map_is_the_crop_at_its_offset():
    # Without padding a conv sees only the window's pixels, so position (i, j) of the map on a
    # 24x24 image is the 16x16 net on the crop at (4i, 4j) (two 2x2 pools: a stride of 4).
    model = small_vgg(size=16, padding=0)
    net = Net(model, seed=4)
    conv_net = Net(dense.convolutional_model(model, size=24))
    dense.copy_weights(net, conv_net)
    x = images(2, 24, seed=1)
    scores = conv_net.predict(x, output="fc8")
    assert scores.shape == (2, 5, 3, 3)
    for i in range(3):
        for j in range(3):
            crop = np.ascontiguousarray(x[:, :, 4 * i:4 * i + 16, 4 * j:4 * j + 16])
            np.testing.assert_allclose(scores[:, :, i, j], net.predict(crop, output="fc8").reshape(2, -1),
                                       rtol=1e-5, atol=1e-6, err_msg=f"position {i},{j}")
    probs = dense.dense_scores(conv_net, x, flips=False)
    crops = [net.predict(np.ascontiguousarray(x[:, :, 4 * i:4 * i + 16, 4 * j:4 * j + 16]))
             for i in range(3) for j in range(3)]
    np.testing.assert_allclose(probs, np.mean(crops, axis=0), rtol=1e-5, atol=1e-7)


def test_dense_errors_name_the_layer():
    m = small_vgg()
    m.layers[[l["name"] for l in m.layers].index("fc6")]["inputs"] = ["pool2", "pool1"]
    with pytest.raises(ValueError, match="fc layer 'fc6' reads 2 layers"):
        dense.convolutional_model(m, size=16)
    with pytest.raises(ValueError, match="'conv1_1.weights' has no counterpart"):
        dense.copy_weights(Net(small_vgg()), Net(Model.from_json(
            '[{"name":"data","type":"input","channels":3,"size":16}]')))


def test_deeper_vgg_starts_from_a_trained_shallower_one():
    a = Net(zoo.vgg("A", classes=4, size=32), seed=1)
    d = Net(zoo.vgg("D", classes=4, size=32), seed=2)
    before = {n: d.get_param(n) for n in d.param_names()}
    copied = zoo.init_from_shallower(d, a)
    assert copied == [f"{l}.{s}" for l in zoo.VGG_INIT_FROM_A for s in ("weights", "biases")]
    for n in d.param_names():
        if n in copied:
            np.testing.assert_array_equal(d.get_param(n), a.get_param(n))
        else:  # the layers A lacks keep their own init
            np.testing.assert_array_equal(d.get_param(n), before[n])
    with pytest.raises(ValueError, match="the shallower net has no parameter 'conv1_1.weights'"):
        zoo.init_from_shallower(d, Net(zoo.small_convnet()), layers=("conv1_1",))
    with pytest.raises(ValueError, match=r"'fc8.weights' is \(10, 4096\) in the shallower net"):
        zoo.init_from_shallower(d, Net(zoo.vgg("A", classes=10, size=32)), layers=("fc8",))


def test_bilinear_resize_keeps_ramps_and_sizes():
    ramp = np.tile(np.arange(8, dtype=np.float32), (1, 2, 8, 1))  # x along the width, 1 x 2 x 8 x 8
    same = dense.resize_bilinear(ramp, 8)
    np.testing.assert_array_equal(same, ramp)
    up = dense.resize_bilinear(ramp, 16)
    assert up.shape == (1, 2, 16, 16)
    inner = up[0, 0, 0, 1:-1]  # interior samples of a linear ramp stay on the line (edges clamp)
    np.testing.assert_allclose(np.diff(inner), 0.5, rtol=1e-6)
    wide = np.zeros((1, 1, 10, 20), np.float32)
    assert dense.resize_bilinear(wide, 5).shape == (1, 1, 5, 10)  # the shorter side is the size


def test_multiscale_test_averages_the_dense_scales():
    model = small_vgg(size=16)
    net = Net(model, seed=5)
    x = images(3, 16, seed=2)
    at_16 = dense.multiscale_scores(net, model, x, [16], flips=False)
    np.testing.assert_allclose(at_16, net.predict(x), rtol=1e-5, atol=1e-7)  # one scale, the training one
    both = dense.multiscale_scores(net, model, x, [16, 24])
    want = (dense.dense_scores(dense_net(net, model, 16), x)
            + dense.dense_scores(dense_net(net, model, 24), dense.resize_bilinear(x, 24))) / 2
    np.testing.assert_allclose(both, want, rtol=1e-5, atol=1e-7)
    assert np.allclose(both.sum(axis=1), 1.0, atol=1e-5)


def test_multicrop_and_its_combination_with_dense():
    model = small_vgg(size=16, padding=0)
    net = Net(model, seed=6)
    x = images(2, 24, seed=3)
    # A 3 x 3 grid on 24x24 images is offsets 0, 4, 8: with padding-free convs exactly the dense
    # map's positions, so the two evaluations agree, and so does their mean.
    crops = dense.multicrop_scores(net, x, grid=3)
    np.testing.assert_allclose(crops, dense.dense_scores(dense_net(net, model, 24), x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dense.dense_and_multicrop_scores(net, model, x, grid=3), crops, rtol=1e-5, atol=1e-7)
    # grid 1 is the centre crop
    centre = np.ascontiguousarray(x[:, :, 4:20, 4:20])
    np.testing.assert_allclose(dense.multicrop_scores(net, x, grid=1, flips=False), net.predict(centre), rtol=1e-6)
    # a 2 x 2 grid is the four corners
    corners = [net.predict(np.ascontiguousarray(x[:, :, t:t + 16, l:l + 16])) for t in (0, 8) for l in (0, 8)]
    np.testing.assert_allclose(dense.multicrop_scores(net, x, grid=2, flips=False), np.mean(corners, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="12x12 images are smaller than the net's 16x16 input"):
        dense.multicrop_scores(net, images(1, 12))
