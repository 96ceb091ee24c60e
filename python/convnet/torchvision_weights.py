"""torchvision's AlexNet and VGG weights in and out of convnet nets, as safetensors files.

    from convnet import zoo, Net, torchvision_weights as tvw
    net = Net(zoo.alexnet_one_tower())
    tvw.import_state_dict(net, "alexnet.safetensors")     # torchvision's alexnet weights
    tvw.export_state_dict(net, "mine.safetensors")        # torchvision.models.alexnet() loads it

The file is a PyTorch state_dict in torchvision's names and layouts: ``alexnet`` (the zoo's
``alexnet_one_tower``: features.0/3/6/8/10, classifier.1/4/6) and ``vgg11``, ``vgg13``,
``vgg16``, ``vgg19`` (the zoo's ``vgg(config="A"|"B"|"D"|"E")``: features.N, classifier.0/3/6).
The layouts are the same on both sides: conv weights filters x channels x kh x kw, fc weights
outputs x inputs, and fc6 reads the last pool's output flattened in (channel, row, column)
order on both sides, so no permutation is needed (checked against PyTorch's outputs by the
committed fixture, tests/data/torchvision/). ``arch`` is found from the
net's layers when not given; a net of another structure is refused, naming the first layer
that differs. The widths (filters, fc outputs, classes) are free: the file's shapes follow the
net's. The last pool must give torchvision's avgpool size (6x6 AlexNet, 7x7 VGG: 224x224
input), where torchvision's AdaptiveAvgPool2d is the identity.

torch is not needed. A ``torch.save``d state_dict (.pth) converts to safetensors with::

    python -c "import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in torch.load('alexnet.pth').items()}, 'alexnet.safetensors')"

docs/TORCH_WEIGHTS.md says where the models differ (dropout placement, LRN, VGG C).
"""

from __future__ import annotations

import os

import numpy as np

try:  # not a dependency of convnet itself: only this module needs it
    from safetensors import deserialize, safe_open
    from safetensors.numpy import save_file
except ImportError as e:
    raise ImportError("convnet.torchvision_weights needs the safetensors package: "
                      "pip install safetensors (or convnet[torch-weights])") from e

from .zoo import VGG_CONFIGS

__all__ = ["export_state_dict", "import_state_dict"]


def _arch_specs() -> dict:
    """Per torchvision arch: the hidden layers in order (dropout aside), each as (kind, options),
    and the torchvision key prefix of each conv and fc layer."""
    def convs_and_pools(blocks, pool):
        layers = []
        for block in blocks:
            layers += [("conv", dict(size=k, stride=s, padding=p)) for k, s, p in block]
            layers.append(("pool", pool))
        return layers

    alex = convs_and_pools([[(11, 4, 2)], [(5, 1, 2)], [(3, 1, 1)] * 3], dict(size=3, stride=2))
    specs = {"alexnet": (alex, (1, 4, 6), 6)}
    for config, name in (("A", "vgg11"), ("B", "vgg13"), ("D", "vgg16"), ("E", "vgg19")):
        blocks = [[(k, 1, k // 2) for _, k in block] for block in VGG_CONFIGS[config]]
        specs[name] = (convs_and_pools(blocks, dict(size=2, stride=2)), (0, 3, 6), 7)
    out = {}
    for name, (features, classifier, pooled) in specs.items():
        layers, index = [], 0
        for kind, opts in features:  # torchvision's features: conv, ReLU (one index each), pool
            layers.append((kind, opts, f"features.{index}" if kind == "conv" else None))
            index += 2 if kind == "conv" else 1
        for i, c in enumerate(classifier):  # fc6, fc7 with ReLU; the last one linear
            layers.append(("fc", dict(neuron="linear" if i == len(classifier) - 1 else "relu"),
                           f"classifier.{c}"))
        out[name] = dict(layers=layers, pooled=pooled)
    return out


ARCHS = _arch_specs()


def _describe(layer: dict) -> str:
    o = layer["options"]
    if layer["type"] == "conv":
        return (f"conv {o.get('size')}x{o.get('size')} stride {o.get('stride')} padding "
                f"{o.get('padding')} neuron {o.get('neuron')}")
    if layer["type"] == "pool":
        return f"{o.get('pool')} pool {o.get('size')}x{o.get('size')} stride {o.get('stride')}"
    if layer["type"] == "fc":
        return f"fc neuron {o.get('neuron')}"
    return f"a {layer['type']} layer"


def _expected(kind: str, opts: dict) -> str:
    if kind == "conv":
        s = opts["size"]
        return f"conv {s}x{s} stride {opts['stride']} padding {opts['padding']} neuron relu"
    if kind == "pool":
        return f"max pool {opts['size']}x{opts['size']} stride {opts['stride']}"
    return f"fc neuron {opts['neuron']}"


def _differs(layer: dict, kind: str, opts: dict) -> str | None:
    """Why `layer` is not torchvision's (kind, opts) layer, or None when it is."""
    o = layer["options"]
    if layer["type"] != kind:
        return "type"
    if kind == "conv":
        want = dict(opts, neuron="relu", groups=1, bias=True)
        got = {k: o.get(k) for k in want}
        if o.get("ceil"):  # convnet's cuda-convnet2 output-size rule; torch's is floor
            return "ceil=True"
    elif kind == "pool":
        want = dict(opts, pool="max", padding=0)
        got = {k: o.get(k) for k in want}
        if o.get("ceil"):
            return "ceil=True"
    else:
        want = dict(opts, bias=True)
        got = {k: o.get(k) for k in want}
    bad = [f"{k}={got[k]!r} (torchvision: {v!r})" for k, v in want.items() if got[k] != v]
    return ", ".join(bad) or None


def _chain(net) -> tuple[list[dict], str | None]:
    """The net's hidden layers in order without dropout (the identity in eval mode), or the
    reason the net is not a single chain from one input."""
    layers = net.layers()
    inputs = [l for l in layers if l["role"] == "input"]
    if len(inputs) != 1:
        return [], f"it has {len(inputs)} input layers, not 1"
    previous, chain = inputs[0]["name"], []
    for l in layers:
        if l["role"] != "hidden":
            continue
        if l["inputs"] != [previous]:
            return chain, (f"layer '{l['name']}' reads {l['inputs']}, not the one layer before it "
                           f"('{previous}'): torchvision's models are one chain")
        previous = l["name"]
        if l["type"] == "dropout" and not l["options"].get("inverted", True):
            return chain, (f"layer '{l['name']}' is the paper's dropout (inverted=false: outputs times "
                           "1 - rate at test time); torchvision's is inverted (the identity in eval mode)")
        if l["type"] != "dropout":
            chain.append(l)
    return chain, None


def _match(chain: list[dict], arch: str) -> str | None:
    """None when the chain is `arch`'s structure, else the first difference in words."""
    spec = ARCHS[arch]["layers"]
    for i, (kind, opts, _) in enumerate(spec):
        if i >= len(chain):
            end = f"after '{chain[-1]['name']}'" if chain else "with no hidden layer"
            return f"the net ends {end}; {arch} goes on with {_expected(kind, opts)}"
        layer = chain[i]
        why = _differs(layer, kind, opts)
        if why is None:
            continue
        if layer["type"] == "lrn":
            return (f"layer '{layer['name']}' is LRN: torchvision's {arch} has none (VGG A-LRN and "
                    "the two-tower AlexNet have no torchvision counterpart; see docs/TORCH_WEIGHTS.md)")
        detail = "" if why == "type" else f" ({why})"
        if layer["type"] == "conv" and layer["options"].get("size") == 1 and arch != "alexnet":
            detail += " (VGG C's 1x1 convs: torchvision has no VGG C)"
        return (f"layer '{layer['name']}' (hidden layer {i + 1}) is {_describe(layer)}{detail}; "
                f"{arch} has {_expected(kind, opts)} there")
    if len(chain) > len(spec):
        return f"layer '{chain[len(spec)]['name']}' is beyond {arch}'s last layer"
    return None


def _resolve(net, arch: str | None) -> tuple[str, list[tuple[str, str]]]:
    """The arch and, per conv/fc layer, (convnet layer name, torchvision key prefix)."""
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    chain, why = _chain(net)
    if why is not None:
        raise ValueError(f"the net is not a torchvision AlexNet/VGG: {why}")
    if arch is None:
        reasons = {a: _match(chain, a) for a in ARCHS}
        found = [a for a, r in reasons.items() if r is None]
        if not found:
            raise ValueError("the net matches no torchvision architecture: "
                             + "; ".join(f"{a}: {r}" for a, r in reasons.items()))
        arch = found[0]
    else:
        why = _match(chain, arch)
        if why is not None:
            raise ValueError(f"the net is not torchvision's {arch}: {why}")
    spec = ARCHS[arch]
    last_pool = [l for l in chain if l["type"] == "pool"][-1]
    c, h, w = last_pool["shape"]
    p = spec["pooled"]
    if (h, w) != (p, p):
        raise ValueError(
            f"layer '{last_pool['name']}' gives {c}x{h}x{w}; torchvision's {arch} pools to "
            f"{p}x{p} with AdaptiveAvgPool2d, the identity only when the last pool gives {p}x{p} "
            f"(224x224 input): at {h}x{w} the fc6 weights would not mean the same thing")
    pairs = [(l["name"], prefix) for l, (_, _, prefix) in zip(chain, spec["layers"]) if prefix]
    return arch, pairs


def export_state_dict(net, path: str, arch: str | None = None) -> str:
    """Writes the net's weights to `path` as a safetensors state_dict in torchvision's names and
    layouts (``torchvision.models.<arch>(num_classes=...).load_state_dict`` takes it, strict).
    arch: "alexnet", "vgg11", "vgg13", "vgg16" or "vgg19"; found from the net's layers when None.
    Returns the arch. ValueError when the net is not that structure, naming the first layer
    that differs."""
    arch, pairs = _resolve(net, arch)
    state = {}
    for layer, prefix in pairs:
        # The same layouts on both sides (see the module's docstring): no transpose.
        state[f"{prefix}.weight"] = np.ascontiguousarray(net.get_param(f"{layer}.weights"), np.float32)
        state[f"{prefix}.bias"] = np.ascontiguousarray(net.get_param(f"{layer}.biases"), np.float32)
    # "format": "pt" is what safetensors.torch writes; tools that check it take the file as torch's.
    # Written beside `path` and renamed: an interrupted export leaves no half file under its name.
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        save_file(state, tmp, metadata={"format": "pt", "arch": arch, "written_by": "convnet"})
        os.replace(tmp, str(path))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return arch


_FLOATS = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


def _bfloat16_tensors(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """numpy has no bfloat16: the library's parser gives the raw bytes; a bfloat16 is the top
    half of a float32."""
    with open(path, "rb") as f:
        raw = dict(deserialize(f.read()))
    out = {}
    for n in names:
        bits = np.frombuffer(bytes(raw[n]["data"]), dtype="<u2").astype(np.uint32) << 16
        out[n] = bits.view(np.float32).reshape(raw[n]["shape"])
    return out


def import_state_dict(net, path: str, arch: str | None = None) -> str:
    """Loads a safetensors state_dict in torchvision's names and layouts (as export_state_dict
    writes, or a torchvision model's converted as the module's docstring shows) into the net.
    float16, bfloat16 and float64 are converted to float32. Every key is checked before any
    weight is set: a missing or unexpected key, a wrong shape or a non-float dtype is a
    ValueError naming the key and what was expected. Returns the arch."""
    arch, pairs = _resolve(net, arch)
    want = {}  # torchvision key -> (convnet parameter, shape)
    for layer, prefix in pairs:
        for suffix, param in (("weight", "weights"), ("bias", "biases")):
            name = f"{layer}.{param}"
            want[f"{prefix}.{suffix}"] = (name, tuple(net.get_param(name).shape))
    with safe_open(str(path), framework="numpy") as f:
        keys = list(f.keys())
        info = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in keys}
        missing = [k for k in want if k not in info]
        if missing:
            k = missing[0]
            hint = (" (its keys start with 'module.': a DataParallel model's; strip the prefix)"
                    if keys and all(x.startswith("module.") for x in keys) else "")
            raise ValueError(f"{path}: missing key '{k}' ({arch}'s {want[k][0]}, shape {want[k][1]}); "
                             f"{len(missing)} of {len(want)} expected keys missing{hint}")
        extra = [k for k in keys if k not in want]
        if extra:
            raise ValueError(f"{path}: unexpected key '{extra[0]}' ({len(extra)} in all): torchvision's "
                             f"{arch} has only {sorted(want)}")
        for k, (param, shape) in want.items():
            dtype, got = info[k]
            if dtype not in _FLOATS:
                raise ValueError(f"{path}: key '{k}' is {dtype}; expected floating point (F32, or "
                                 "F16/BF16/F64, converted to float32)")
            if got != shape:
                raise ValueError(f"{path}: key '{k}' has shape {got}; the net's {param} needs {shape}")
        values = {k: f.get_tensor(k) for k in want if info[k][0] != "BF16"}
    values.update(_bfloat16_tensors(str(path), [k for k in want if info[k][0] == "BF16"])
                  if any(info[k][0] == "BF16" for k in want) else {})
    for k, (param, _) in want.items():
        net.set_param(param, np.asarray(values[k], dtype=np.float32))
    return arch
