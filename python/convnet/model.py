"""Define a network in Python: a list of named layer specs, written out as the JSON model
definition that the C++ engine reads (the same format as the files in configs/)."""

from __future__ import annotations

import inspect
import json
import math
from typing import Iterable

from . import _core


class Model:
    """A model definition built layer by layer.

    Every method adds one layer and returns its name, so layers can be chained::

        m = Model()
        x = m.input("data", channels=1, size=28)
        y = m.labels("labels")
        h = m.conv("conv1", x, filters=32, size=5, padding=2, neuron="relu", init="kaiming")
        h = m.pool("pool1", h, size=3, stride=2)
        h = m.fc("fc2", h, outputs=10)
        m.softmax_cost("cost", h, y)

    There is one method per layer type the engine registers, made from the type's declaration
    in C++ (``convnet.layer_types()``): its inputs, then its options with their defaults and
    help (``help(Model.conv)``). Only the options given are written to the definition; the
    engine applies the defaults. Every method also takes ``device`` (logical device,
    cuda-convnet's ``gpu=``; a list of them replicates the layer, data parallel: each replica
    computes its part of the batch, as cuda-convnet2's ``gpu=0,1,2,3``).
    """

    def __init__(self, layers: Iterable[dict] | None = None):
        self.layers: list[dict] = [dict(l) for l in (layers or [])]

    # ---- layer methods ----
    def add(self, name: str, type: str, inputs: str | list[str] | None = None, **options) -> str:
        """Adds a layer of any type; the typed methods (one per registered type) call this."""
        if any(l["name"] == name for l in self.layers):
            raise ValueError(f"layer '{name}' is defined twice")
        for key, value in options.items():
            # JSON has no NaN or Infinity (json.dumps would write them, the engine refuse the text
            # as a whole): name the option here. The engine range-checks the rest.
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"layer '{name}': option '{key}' must be a finite number, got {value!r}")
        spec = {"name": name, "type": type}
        if inputs is not None:
            spec["inputs"] = [inputs] if isinstance(inputs, str) else list(inputs)
        spec.update({k: v for k, v in options.items() if v is not None})
        self.layers.append(spec)
        return name

    # ---- serialisation ----
    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps({"layers": self.layers}, indent=indent)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> "Model":
        """A definition as written by to_json ({"layers": [...]}), or a bare list of layers. Any
        other top-level key is an error, as the engine says (a misspelt key is not ignored)."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            return cls(doc)
        unknown = sorted(set(doc) - {"layers"})
        if unknown:
            raise ValueError(f"model definition: unknown top-level key '{unknown[0]}' "
                             '(a model definition is {"layers": [...]})')
        if "layers" not in doc:
            raise ValueError('model definition: expected a "layers" list')
        return cls(doc["layers"])

    @classmethod
    def load(cls, path: str, size: int | None = None, layer_params: str | None = None) -> "Model":
        """A JSON model file, or cuda-convnet2's layers-*.cfg with its layer-params file
        (`layer_params`, default: layer-params-X.cfg beside it) and `size`, the side of the images
        its data layer delivers (cuda-convnet2 takes it from its data provider)."""
        if path.endswith(".cfg"):
            params = layer_params or _core.cuda_convnet_params_path(path)
            if not params:
                raise ValueError(f"{path}: give its layer-params file (layer_params=...); only a "
                                 "layers-X.cfg implies layer-params-X.cfg")
            if not size:
                raise ValueError(f"{path}: give the image size its data layer delivers (size=...); "
                                 "cuda-convnet2 takes it from its data provider")
            return cls.from_json(_core.read_cuda_convnet_cfg(path, params, size))
        with open(path) as f:
            return cls.from_json(f.read())

    def save_cuda_convnet(self, layers_path: str, params_path: str | None = None) -> None:
        """Writes the model as cuda-convnet2's layers-*.cfg and layer-params-*.cfg (default:
        layer-params-X.cfg beside a layers-X.cfg)."""
        params_path = params_path or _core.cuda_convnet_params_path(layers_path)
        if not params_path:
            raise ValueError(f"{layers_path}: give params_path (only a layers-X.cfg implies layer-params-X.cfg)")
        layers_text, params_text = _core.write_cuda_convnet_cfg(self.to_json())
        for path, text in ((layers_path, layers_text), (params_path, params_text)):
            with open(path, "w") as f:
                f.write(text)

    def __len__(self) -> int:
        return len(self.layers)


def _layer_method(decl: dict):
    """Model.<type>(name, <inputs>, <options>): a method for one declared layer type."""
    P = inspect.Parameter
    type_name, input_names = decl["name"], decl["input_names"]
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("name", P.POSITIONAL_OR_KEYWORD)]
    if input_names:
        params += [P(n, P.POSITIONAL_OR_KEYWORD) for n in input_names]
    elif decl["max_inputs"] != 0:
        params.append(P("inputs", P.POSITIONAL_OR_KEYWORD))
    # Required options first (Python's rule), each group in declaration order.
    options = sorted(decl["options"], key=lambda o: o["presence"] != "required")
    for o in options:
        default = {"required": P.empty, "optional": None}.get(o["presence"], o["default"])
        params.append(P(o["name"], P.POSITIONAL_OR_KEYWORD, default=default))
    params.append(P("device", P.KEYWORD_ONLY, default=None))
    signature = inspect.Signature(params)

    def method(self, *args, **kwargs) -> str:
        try:
            given = signature.bind(self, *args, **kwargs).arguments  # only what the caller gave
        except TypeError as e:  # a misspelt or missing option: say which layer and what it takes
            layer = f"'{args[0]}'" if args else ""
            known = ", ".join(o["name"] for o in decl["options"]) or "no options"
            raise TypeError(f"Model.{type_name}({layer}): {e} ({type_name} layers take: {known})") from None
        given.pop("self")
        name = given.pop("name")
        if input_names:
            inputs = [given.pop(n) for n in input_names]
        else:
            inputs = given.pop("inputs", None)
        return self.add(name, type_name, inputs, **given)

    lines = [decl["help"] + ".", "", "Options (defaults are the engine's):"]
    for o in decl["options"]:
        default = {"required": "required", "optional": "optional"}.get(o["presence"], f"default {o['default']!r}")
        lines.append(f"    {o['name']} ({o['kind']}, {default}): {o['help']}")
    method.__name__ = method.__qualname__ = type_name
    method.__signature__ = signature
    method.__doc__ = "\n".join(lines)
    return method


for _decl in _core.layer_types().values():
    if hasattr(Model, _decl["name"]):
        raise RuntimeError(f"layer type '{_decl['name']}' clashes with Model.{_decl['name']}")
    setattr(Model, _decl["name"], _layer_method(_decl))
