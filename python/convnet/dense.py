"""Dense evaluation (VGG, Simonyan & Zisserman 2014, section 3.2): the fully connected layers
become convolutions, so the net runs over a whole rescaled image at once and gives a map of class
scores, one per position of the training-size window; the softmax of each position is averaged over
the map, and over the horizontally flipped image.

    conv_model = dense.convolutional_model(model, size=256)    # fc6 a KxK conv, fc7/fc8 1x1 convs
    conv_net = convnet.Net(conv_model)
    dense.copy_weights(net, conv_net)                          # fc weights reshaped, the rest as is
    probs = dense.dense_scores(conv_net, images)               # N x classes
    probs = dense.multiscale_scores(net, model, images, [224, 256, 288])   # multi-scale test

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


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """N x C x H x W images resized so the shorter side is `size` (bilinear, pixel centres
    aligned, edges clamped), float32."""
    n, c, h, w = x.shape
    scale = size / min(h, w)
    oh, ow = max(1, round(h * scale)), max(1, round(w * scale))

    def taps(out_len, in_len):
        pos = (np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5
        pos = np.clip(pos, 0, in_len - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, in_len - 1)
        return lo, hi, (pos - lo).astype(np.float64)

    y0, y1, fy = taps(oh, h)
    x0, x1, fx = taps(ow, w)
    xd = x.astype(np.float64)
    rows = xd[:, :, y0, :] * (1 - fy)[:, None] + xd[:, :, y1, :] * fy[:, None]
    out = rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx
    return out.astype(np.float32)


def multiscale_scores(net: Net, model: Model, x: np.ndarray, scales, flips: bool = True) -> np.ndarray:
    """VGG's multi-scale test: for each scale Q the images rescaled so the shorter side is Q (then
    centre-cropped to Q x Q), evaluated densely by the convolutional form of `model` carrying
    `net`'s weights, and the class probabilities averaged over the scales (N x K). The paper used
    Q in {S - 32, S, S + 32} for a net trained at scale S."""
    probs = []
    for q in scales:
        conv_net = Net(convolutional_model(model, size=int(q)))
        copy_weights(net, conv_net)
        r = resize_bilinear(x, int(q))
        top, left = (r.shape[2] - q) // 2, (r.shape[3] - q) // 2
        probs.append(dense_scores(conv_net, np.ascontiguousarray(r[:, :, top:top + q, left:left + q]), flips))
    return np.mean(probs, axis=0)


def multicrop_scores(net: Net, x: np.ndarray, grid: int = 5, flips: bool = True) -> np.ndarray:
    """VGG's multi-crop test at one scale: the net's input-size crops of x (N x C x S x S, S at
    least the input size) on a grid x grid regular grid from corner to corner (the paper: 5 x 5,
    with flips, 50 crops per scale), class probabilities averaged over the crops (N x K)."""
    side = net.output_shape(net.inputs[0])[1]
    n, _, h, w = x.shape
    if h < side or w < side:
        raise ValueError(f"multicrop_scores: {h}x{w} images are smaller than the net's {side}x{side} input")
    if grid < 1:
        raise ValueError(f"multicrop_scores: grid must be >= 1, got {grid}")
    tops = np.linspace(0, h - side, grid).round().astype(int) if grid > 1 else [(h - side) // 2]
    lefts = np.linspace(0, w - side, grid).round().astype(int) if grid > 1 else [(w - side) // 2]
    probs = []
    for top in tops:
        for left in lefts:
            crop = x[:, :, top:top + side, left:left + side]
            for view in ([crop, crop[..., ::-1]] if flips else [crop]):
                probs.append(net.predict(np.ascontiguousarray(view)))
    return np.mean(probs, axis=0)


def dense_and_multicrop_scores(net: Net, model: Model, x: np.ndarray, grid: int = 5) -> np.ndarray:
    """The paper's best single-scale combination (table 6): the mean of the dense evaluation and
    the multi-crop evaluation of the same images (both with flips)."""
    conv_net = Net(convolutional_model(model, size=x.shape[2]))
    copy_weights(net, conv_net)
    return (dense_scores(conv_net, x) + multicrop_scores(net, x, grid)) / 2
