"""Dense evaluation (VGG, Simonyan & Zisserman 2014, section 3.2): the fully connected layers
become convolutions, so the net runs over a whole rescaled image at once and gives a map of class
scores, one per position of the training-size window; the softmax of each position is averaged over
the map, and over the horizontally flipped image.

    conv_model = dense.convolutional_model(model, size=256)    # fc6 a KxK conv, fc7/fc8 1x1 convs
    conv_net = convnet.Net(conv_model)
    dense.copy_weights(net, conv_net)                          # fc weights reshaped, the rest as is
    probs = dense.dense_scores(conv_net, images)               # N x classes

The first fc layer reads a C x K x K map in the original net; as a convolution it has K x K
filters over C channels whose weights are the fc rows reshaped (an fc input is ordered (c, y, x)
per case, as a conv filter's weights are). Later fc layers read 1 x 1 maps and become 1 x 1
convolutions. Dropout stays (the identity at test time); labels and cost layers go.
"""
from __future__ import annotations

import numpy as np

from .model import Model
from .net import Net

_LEARNING_KEYS = ("epsW", "epsB", "momW", "momB", "wc", "wcB", "init", "initW", "initB", "bias",
                  "neuron", "slope", "updatePeriod", "scheduleW", "scheduleB", "device")


def convolutional_model(model: Model, size: int) -> Model:
    """`model` for square inputs of side `size` with every fc layer a convolution (named as the fc
    layer) and no labels or cost layers. The net must be one chain of layers from its input; an fc
    layer must read a square map (every fc after the first reads 1 x 1)."""
    shapes = {l["name"]: tuple(l["shape"]) for l in Net(model).layers()}
    out = Model()
    dropped = set()
    for l in model.layers:
        l = dict(l)
        kind, name = l["type"], l["name"]
        if kind in ("labels", "softmax_cost", "sum2_cost"):
            dropped.add(name)
            continue
        inputs = l.get("inputs") or []
        if any(i in dropped for i in inputs):
            raise ValueError(f"dense: layer '{name}' reads a labels or cost layer")
        if kind == "input":
            l["size"] = size
            l.pop("height", None), l.pop("width", None)
        elif kind == "fc":
            if len(inputs) != 1:
                raise ValueError(f"dense: fc layer '{name}' reads {len(inputs)} layers; a convolution "
                                 "over a joined map needs one")
            c, h, w = shapes[inputs[0]]
            if h != w:
                raise ValueError(f"dense: fc layer '{name}' reads a {h}x{w} map; only square maps "
                                 "become square filters")
            conv = {"name": name, "type": "conv", "inputs": inputs, "filters": l["outputs"], "size": h}
            conv.update({k: l[k] for k in _LEARNING_KEYS if k in l})
            l = conv
        out.layers.append(l)
    return out


def copy_weights(net: Net, conv_net: Net) -> list[str]:
    """`net`'s weights into its convolutional_model's net: fc weights {O, C*K*K} reshaped to conv
    filters {O, C, K, K}, every other parameter as it is. Returns the parameters copied."""
    names = conv_net.param_names()
    for name in net.param_names():
        if name not in names:
            raise ValueError(f"dense: '{name}' has no counterpart in the convolutional net")
        value = net.get_param(name)
        want = conv_net.get_param(name).shape
        if value.size != int(np.prod(want)):
            raise ValueError(f"dense: '{name}' has {value.size} values, its convolution {want}")
        conv_net.set_param(name, value.reshape(want))
    return list(net.param_names())


def softmax_map(scores: np.ndarray) -> np.ndarray:
    """Softmax over the classes (axis 1) of an N x K x H x W score map, at every position."""
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z.astype(np.float64))
    return e / e.sum(axis=1, keepdims=True)


def dense_scores(conv_net: Net, x: np.ndarray, flips: bool = True, output: str | None = None) -> np.ndarray:
    """Class probabilities (N x K) of images x (N x C x S x S, the convolutional net's input
    size): the softmax at every position of the class score map, averaged over the positions and,
    with `flips`, over the image and its horizontal reflection."""
    output = output or conv_net.layers()[-1]["name"]
    views = [x, x[..., ::-1]] if flips else [x]
    probs = [softmax_map(conv_net.predict(np.ascontiguousarray(v), output=output)).mean(axis=(2, 3))
             for v in views]
    return np.mean(probs, axis=0)
