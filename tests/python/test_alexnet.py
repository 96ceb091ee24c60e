"""The zoo's AlexNets: the 2012 paper's two-tower split, sizes and a training step."""

import math

import numpy as np

import convnet


def test_alexnet_2012_matches_the_paper():
    net = convnet.Net(convnet.zoo.alexnet_2012(), devices=["cpu", "cpu"])
    assert net.parameter_count == 60_965_224
    shapes = {l["name"]: l["shape"] for l in net.layers()}
    # Each tower carries half the paper's channels; side by side they are the paper's sizes.
    for tower in "ab":
        assert shapes[f"conv1{tower}"] == (48, 55, 55)       # 55x55x96 after conv1
        assert shapes[f"pool2{tower}"] == (128, 13, 13)      # conv2's pool: 27x27x256 -> 13x13
        assert shapes[f"conv2{tower}"] == (128, 27, 27)      # 27x27x256
        assert shapes[f"conv3{tower}"] == (192, 13, 13)      # 13x13x384
        assert shapes[f"conv4{tower}"] == (192, 13, 13)      # 13x13x384
        assert shapes[f"conv5{tower}"] == (128, 13, 13)      # 13x13x256
        assert shapes[f"pool5{tower}"] == (128, 6, 6)        # 6x6x256 after the last pool
    devices = {l["name"]: l["device"] for l in net.layers()}
    layers = {l["name"]: l for l in net.layers()}
    assert layers["conv3a"]["inputs"] == ["pool2a", "pool2b"]   # conv3 sees both towers
    assert layers["conv4a"]["inputs"] == ["conv3a"]             # conv4 only its own
    assert layers["fc6b"]["inputs"] == ["pool5a", "pool5b"]
    assert devices["conv1a"] == "cpu:0" and devices["conv1b"] == "cpu:0"  # both towers on the CPU


def test_alexnet_one_tower_matches_torchvision_size():
    net = convnet.Net(convnet.zoo.alexnet_one_tower())
    assert net.parameter_count == 61_100_840
    assert net.output_shape("pool5") == (256, 6, 6)


def test_alexnet_2012_trains_a_step():
    net = convnet.Net(convnet.zoo.alexnet_2012(), seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 224, 224)).astype(np.float32)
    y = np.array([3, 999])
    stats = net.train_step(x, y)["costs"][0]
    # N(0, 0.01) weights and biases of 1 give logits of std about 1: the first cost is near
    # log(1000) = 6.9 plus about half the logits' variance.
    assert math.log(1000) - 0.5 < stats["cost"] < math.log(1000) + 1.5
    assert np.abs(net.get_grad("conv1a.weights")).max() > 0
    assert np.abs(net.get_grad("conv1b.weights")).max() > 0
    assert net.predict(x).shape == (2, 1000)
