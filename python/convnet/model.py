"""Define a network in Python: a list of named layer specs, written out as the JSON model
definition that the C++ engine reads (the same format as the files in configs/)."""

from __future__ import annotations

import json
from typing import Iterable


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

    Common options: ``device`` (logical device, cuda-convnet's ``gpu=``); for conv and fc the
    learning hyperparameters ``epsW, epsB, momW, momB, wc, wcB`` and the init ``initW`` (std of
    the gaussian), ``initB`` (constant bias), ``init`` ("gaussian", "kaiming" or "xavier").
    """

    def __init__(self, layers: Iterable[dict] | None = None):
        self.layers: list[dict] = [dict(l) for l in (layers or [])]

    # ---- layer methods ----
    def add(self, name: str, type: str, inputs: str | list[str] | None = None, **options) -> str:
        """Adds a layer of any type; the typed methods below call this."""
        if any(l["name"] == name for l in self.layers):
            raise ValueError(f"layer '{name}' is defined twice")
        spec = {"name": name, "type": type}
        if inputs is not None:
            spec["inputs"] = [inputs] if isinstance(inputs, str) else list(inputs)
        spec.update({k: v for k, v in options.items() if v is not None})
        self.layers.append(spec)
        return name

    def input(self, name: str, channels: int, size: int | None = None, height: int | None = None,
              width: int | None = None, **kw) -> str:
        return self.add(name, "input", None, channels=channels, size=size, height=height, width=width, **kw)

    def labels(self, name: str = "labels", **kw) -> str:
        return self.add(name, "labels", None, **kw)

    def conv(self, name, inputs, filters, size, stride=1, padding=0, groups=1, neuron="linear", **kw) -> str:
        return self.add(name, "conv", inputs, filters=filters, size=size, stride=stride, padding=padding,
                        groups=groups, neuron=neuron, **kw)

    def fc(self, name, inputs, outputs, neuron="linear", **kw) -> str:
        return self.add(name, "fc", inputs, outputs=outputs, neuron=neuron, **kw)

    def pool(self, name, inputs, size, stride=None, pool="max", ceil=False, **kw) -> str:
        return self.add(name, "pool", inputs, size=size, stride=stride, pool=pool, ceil=ceil, **kw)

    def lrn(self, name, inputs, size=5, k=2.0, alpha=1e-4, beta=0.75, **kw) -> str:
        """Cross-map LRN with the AlexNet paper's alpha (not divided by size)."""
        return self.add(name, "lrn", inputs, size=size, k=k, alpha=alpha, beta=beta, **kw)

    def neuron(self, name, inputs, neuron="relu", **kw) -> str:
        return self.add(name, "neuron", inputs, neuron=neuron, **kw)

    def dropout(self, name, inputs, rate=0.5, **kw) -> str:
        return self.add(name, "dropout", inputs, rate=rate, **kw)

    def softmax_cost(self, name, scores, labels, coeff=1.0, **kw) -> str:
        return self.add(name, "softmax_cost", [scores, labels], coeff=coeff, **kw)

    def concat(self, name, inputs, **kw) -> str:
        return self.add(name, "concat", inputs, **kw)

    def split(self, name, inputs, start, count, **kw) -> str:
        return self.add(name, "split", inputs, start=start, count=count, **kw)

    def sum(self, name, inputs, coeffs=None, **kw) -> str:
        return self.add(name, "sum", inputs, coeffs=coeffs, **kw)

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
    def load(cls, path: str) -> "Model":
        with open(path) as f:
            return cls.from_json(f.read())

    def __len__(self) -> int:
        return len(self.layers)
