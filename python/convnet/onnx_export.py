"""A trained net as a standard ONNX model (opset 17), for onnxruntime and other ONNX runtimes.

    import convnet.onnx_export
    net = convnet.Net.from_checkpoint("runs/fashion/ckpt-....safetensors")
    convnet.onnx_export.export(net, "fashion.onnx")

The graph takes one NCHW float32 input per input layer, named after the layer, with a symbolic
batch dimension "N", and gives each classifying cost layer's class probabilities (N x K, named
after the cost layer) as in ``Net.predict``; a net without one gives its last hidden layers.
Every other value is named after the layer that makes it and has the layer's NCHW shape, as
``Net.output`` returns it. The graph computes the test-mode forward pass: dropout is left out,
labels layers are not inputs, cost layers other than softmax_cost are left out. Towers and
devices do not matter: a multi-device net is one graph. docs/ONNX.md has the op mapping.

Needs the ``onnx`` package (pip install onnx), imported when export is called.
"""

from __future__ import annotations

import numpy as np

OPSET = 17  # LRN, pooling with pads, Softmax over one axis; run by onnxruntime 1.13 and later

# The neuron functions ONNX has, by convnet's name (and its aliases): op and attributes.
_NEURONS = {
    "relu": ("Relu", {}), "tanh": ("Tanh", {}), "logistic": ("Sigmoid", {}), "sigmoid": ("Sigmoid", {}),
    "softsign": ("Softsign", {}), "leaky_relu": ("LeakyRelu", None), "lrelu": ("LeakyRelu", None),
}
_LINEAR = ("linear", "ident", "")

# Layer types this exporter writes; anything else (a newer layer type) is refused by name.
SUPPORTED = ("input", "labels", "conv", "fc", "pool", "lrn", "neuron", "dropout", "concat", "split",
             "sum", "softmax_cost", "sum2_cost")


class UnsupportedLayerError(ValueError):
    """A layer the exporter has no ONNX translation for."""


class _Graph:
    """Nodes, initializers and unique value names, added to in topological order."""

    def __init__(self, helper, numpy_helper):
        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.names: set[str] = set()

    def name(self, want: str) -> str:
        name, i = want, 1
        while name in self.names:
            i += 1
            name = f"{want}_{i}"
        self.names.add(name)
        return name

    def const(self, want: str, array) -> str:
        name = self.name(want)
        self.inits.append(self.nh.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        """One node with one output: `out` is used as it is when free, otherwise made unique."""
        out = out if out not in self.names else self.name(out)
        self.names.add(out)
        self.nodes.append(self.h.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _linear(layer: dict) -> bool:
    return layer["options"].get("neuron", "linear") in _LINEAR


def _neuron(g: _Graph, layer: dict, x: str, out: str) -> str:
    """The layer's fused activation after x, its output named `out` (or a name of its own)."""
    o = layer["options"]
    kind = o.get("neuron", "linear")
    if kind in _LINEAR:
        return g.node("Identity", [x], out) if out else x
    if kind not in _NEURONS:
        raise UnsupportedLayerError(f"ONNX export: layer '{layer['name']}' ({layer['type']}) has neuron "
                                    f"'{kind}', which has no ONNX op here (known: linear, "
                                    f"{', '.join(sorted(_NEURONS))})")
    op, attrs = _NEURONS[kind]
    if attrs is None:  # leaky relu: convnet's slope is ONNX's alpha
        attrs = {"alpha": float(o.get("slope", 0.01))}
    return g.node(op, [x], out or f"{layer['name']}/{op.lower()}", **attrs)


def _join_channels(g: _Graph, name: str, xs: list[str]) -> str:
    # convnet joins several conv inputs end to end in CHWN memory: a concat along channels.
    return xs[0] if len(xs) == 1 else g.node("Concat", xs, f"{name}/joined", axis=1)


def _conv(g: _Graph, net, layer: dict, xs: list[str], shapes: dict) -> str:
    name, o = layer["name"], layer["options"]
    x = _join_channels(g, name, xs)
    _, h, w = shapes[layer["inputs"][0]]
    _, out_h, out_w = layer["shape"]
    size, stride, pad = int(o["size"]), int(o["stride"]), int(o["padding"])
    # ceil rounding: the last positions read zeros past the bottom/right edge; extra end padding
    # gives those zeros, so floor rounding in ONNX lands on convnet's output size either way.
    eh = max(0, (out_h - 1) * stride + size - (h + 2 * pad))
    ew = max(0, (out_w - 1) * stride + size - (w + 2 * pad))
    # convnet's weights are filters x (channels / groups) x size x size, ONNX's W layout.
    ins = [x, g.const(f"{name}.weights", net.get_param(f"{name}.weights"))]
    if o.get("bias", True):
        ins.append(g.const(f"{name}.biases", net.get_param(f"{name}.biases")))
    y = g.node("Conv", ins, name if _linear(layer) else f"{name}/conv", kernel_shape=[size, size],
               strides=[stride, stride], pads=[pad, pad, pad + eh, pad + ew], group=int(o["groups"]),
               dilations=[1, 1])
    return y if _linear(layer) else _neuron(g, layer, y, name)


def _fc(g: _Graph, net, layer: dict, xs: list[str]) -> str:
    name, o = layer["name"], layer["options"]
    # A CHWN activation is already (C*H*W) x N with C slowest: the rows of ONNX's Flatten of NCHW
    # in the same order, so the weights need no permutation (the onnxruntime tests check it).
    # Several inputs are joined row-wise: flatten each, then concatenate.
    flat = [g.node("Flatten", [x], f"{name}/flat", axis=1) for x in xs]
    x = flat[0] if len(flat) == 1 else g.node("Concat", flat, f"{name}/joined", axis=1)
    ins = [x, g.const(f"{name}.weights", net.get_param(f"{name}.weights"))]
    if o.get("bias", True):
        ins.append(g.const(f"{name}.biases", net.get_param(f"{name}.biases")))
    y = g.node("Gemm", ins, f"{name}/gemm", transB=1)
    y = _neuron(g, layer, y, "")
    # Back to NCHW (N x outputs x 1 x 1), the shape convnet gives the layer.
    return g.node("Unsqueeze", [y, g.const(f"{name}/axes", np.array([2, 3], np.int64))], name)


def _pool(g: _Graph, layer: dict, x: str, shapes: dict) -> str:
    name, o = layer["name"], layer["options"]
    _, h, w = shapes[layer["inputs"][0]]
    _, out_h, out_w = layer["shape"]
    size, pad = int(o["size"]), int(o.get("padding", 0))
    stride = int(o["stride"]) if o.get("stride") is not None else size
    # convnet's output size (floor or ceil rounding) is taken from the layer and reached with
    # explicit end padding and ceil_mode=0: window o covers [o*stride - pad, o*stride - pad + size)
    # clipped to the padded input, which is what ONNX pads do for max pooling and for averages
    # that leave padding out. This does not lean on a runtime's reading of ceil_mode (whether
    # a last window starting in the padding is kept).
    eh = max(0, (out_h - 1) * stride + size - (h + 2 * pad))
    ew = max(0, (out_w - 1) * stride + size - (w + 2 * pad))
    geometry = dict(kernel_shape=[size, size], strides=[stride, stride])
    if o.get("pool", "max") == "max":
        return g.node("MaxPool", [x], name, pads=[pad, pad, pad + eh, pad + ew], **geometry)
    if not o.get("count_padding", True):
        return g.node("AveragePool", [x], name, pads=[pad, pad, pad + eh, pad + ew], count_include_pad=0,
                      **geometry)
    if eh == 0 and ew == 0:
        return g.node("AveragePool", [x], name, pads=[pad] * 4, count_include_pad=1, **geometry)
    # Averages that count the padding but not the cells past it (ceil's clipped last window):
    # the padding as real zeros, then an average that leaves the extra end cells out.
    padded = g.node("Pad", [x, g.const(f"{name}/pads", np.array([0, 0, pad, pad, 0, 0, pad, pad], np.int64))],
                    f"{name}/padded", mode="constant")
    return g.node("AveragePool", [padded], name, pads=[0, 0, eh, ew], count_include_pad=0, **geometry)


def _lrn(g: _Graph, layer: dict, x: str, shapes: dict) -> str:
    name, o = layer["name"], layer["options"]
    size, k, alpha, beta = int(o["size"]), float(o["k"]), float(o["alpha"]), float(o["beta"])
    if size % 2 == 1:
        # ONNX LRN divides alpha by size; convnet's alpha is the paper's, used as it is.
        return g.node("LRN", [x], name, size=size, alpha=alpha * size, beta=beta, bias=k)
    # An even window: convnet's covers [c - size/2, c + size/2 - 1], ONNX's LRN centres it the
    # other way. Sum the squares over convnet's window with a ones-kernel Conv over channels.
    c, h, w = shapes[layer["inputs"][0]]
    sq = g.node("Mul", [x, x], f"{name}/sq")
    rows = g.node("Reshape", [sq, g.const(f"{name}/shape1", np.array([-1, 1, c, h * w], np.int64))],
                  f"{name}/rows")
    ones = g.const(f"{name}/window", np.ones((1, 1, size, 1), np.float32))
    s = g.node("Conv", [rows, ones], f"{name}/sum", kernel_shape=[size, 1],
               pads=[size // 2, 0, size - 1 - size // 2, 0])
    s = g.node("Reshape", [s, g.const(f"{name}/shape2", np.array([-1, c, h, w], np.int64))], f"{name}/sums")
    den = g.node("Mul", [s, g.const(f"{name}/alpha", np.array(alpha, np.float32))], f"{name}/scaled")
    den = g.node("Add", [den, g.const(f"{name}/k", np.array(k, np.float32))], f"{name}/base")
    den = g.node("Pow", [den, g.const(f"{name}/beta", np.array(beta, np.float32))], f"{name}/den")
    return g.node("Div", [x, den], name)


def _sum(g: _Graph, layer: dict, xs: list[str]) -> str:
    name = layer["name"]
    coeffs = layer["options"].get("coeffs") or [1.0] * len(xs)
    terms = [x if float(c) == 1.0 else
             g.node("Mul", [x, g.const(f"{name}/coeff{i}", np.array(c, np.float32))], f"{name}/term{i}")
             for i, (x, c) in enumerate(zip(xs, coeffs))]
    return g.node("Sum", terms, name)


def build(net, outputs=None, opset: int = OPSET):
    """The ONNX ModelProto of `net` (a convnet.Net) in test mode. `outputs`: layer names to give as
    graph outputs instead of the default (classifier probabilities, or the last hidden layers).
    Raises UnsupportedLayerError naming a layer ONNX has no op for."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = net.layers()
    for l in layers:
        if l["type"] not in SUPPORTED:
            raise UnsupportedLayerError(
                f"ONNX export: layer '{l['name']}' has type '{l['type']}', which has no ONNX translation "
                f"(supported types: {', '.join(SUPPORTED)})")
    by_name = {l["name"]: l for l in layers}
    shapes = {l["name"]: tuple(int(d) for d in l["shape"]) for l in layers}
    g = _Graph(helper, numpy_helper)
    values: dict[str, str] = {}  # layer -> ONNX value of its NCHW output
    graph_inputs = []
    for l in layers:  # the engine lists layers in topological order
        name, kind = l["name"], l["type"]
        xs = [values[i] for i in l["inputs"] if i in values]
        if kind == "input":
            g.names.add(name)
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shapes[name]]))
            values[name] = name
        elif kind in ("labels", "sum2_cost"):
            continue  # labels and the training objective are not part of inference
        elif kind == "conv":
            values[name] = _conv(g, net, l, xs, shapes)
        elif kind == "fc":
            values[name] = _fc(g, net, l, xs)
        elif kind == "pool":
            values[name] = _pool(g, l, xs[0], shapes)
        elif kind == "lrn":
            values[name] = _lrn(g, l, xs[0], shapes)
        elif kind == "neuron":
            values[name] = _neuron(g, l, xs[0], name)
        elif kind == "dropout":
            o = l["options"]
            if o.get("inverted", True):
                values[name] = xs[0]  # inverted dropout: the identity at test time
            else:  # the paper's rule (cuda-convnet2's dropout2): outputs times 1 - rate at test time
                keep = np.array(1.0 - float(o["rate"]), np.float32)
                values[name] = g.node("Mul", [xs[0], g.const(f"{name}/keep", keep)], name)
        elif kind == "concat":
            values[name] = g.node("Concat", xs, name, axis=1) if len(xs) > 1 else g.node("Identity", xs, name)
        elif kind == "split":
            start, count = int(l["options"]["start"]), int(l["options"]["count"])
            values[name] = g.node("Slice", [xs[0], g.const(f"{name}/starts", np.array([start], np.int64)),
                                            g.const(f"{name}/ends", np.array([start + count], np.int64)),
                                            g.const(f"{name}/axes", np.array([1], np.int64))], name)
        elif kind == "sum":
            values[name] = _sum(g, l, xs)
        elif kind == "softmax_cost":
            # The cost layer's output is the class probabilities: softmax over the flattened scores.
            flat = g.node("Flatten", [xs[0]], f"{name}/scores", axis=1)
            values[name] = g.node("Softmax", [flat], name, axis=1)

    if outputs is None:
        outputs = [l["name"] for l in layers if l["classifies"]]
        if not outputs:  # no classifier: the layers no exported layer reads (or a cost reads)
            read = {i for l in layers if l["name"] in values for i in l["inputs"]}
            costs_read = {i for l in layers if l["role"] == "cost" for i in l["inputs"]}
            outputs = [n for n in values if by_name[n]["type"] != "input" and (n not in read or n in costs_read)]
    graph_outputs = []
    for n in outputs:
        if n not in values:
            raise ValueError(f"ONNX export: '{n}' is not a layer the graph computes "
                             f"(layers: {', '.join(v for v in values)})")
        v = values[n]
        if v != n:  # a dropout (or an input) passes its input on: give it the layer's name
            v = g.node("Identity", [v], n)
        shape = ["N", int(shapes[n][0] * shapes[n][1] * shapes[n][2])] if by_name[n]["classifies"] \
            else ["N", *shapes[n]]
        graph_outputs.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, shape))
    graph = helper.make_graph(g.nodes, "convnet", graph_inputs, graph_outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="convnet", doc_string="exported by convnet.onnx_export")
    # ir_version: the newest the opset needs, not the installed onnx's newest, so older runtimes load it.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export(net, path: str, outputs=None, opset: int = OPSET):
    """Writes `net` (a convnet.Net) as an ONNX file at `path`; returns the ModelProto."""
    try:
        import onnx
    except ImportError:
        raise ImportError("convnet.onnx_export needs the onnx package: pip install onnx") from None
    model = build(net, outputs, opset)
    onnx.save(model, path)
    return model
