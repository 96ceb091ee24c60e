"""A model's layers as a table: output shapes, parameters, multiply-adds and receptive fields.

    from convnet import summary, zoo
    print(summary.format_summary(summary.summary(zoo.alexnet_2012())))

Shapes and parameter counts come from the engine itself (a Net built on the CPU), so the table
is what the engine runs; kernel sizes, strides and groups come from the Net's model JSON.
"""

from __future__ import annotations


from .model import Model
from .net import Net

BYTES_PER_VALUE = 4  # parameters and activations are float32


def summary(model_or_net: Model | Net | str, batch: int = 1) -> list[dict]:
    """One dict per layer, in the Net's execution order, then a totals row.

    ``model_or_net`` is a Model, its JSON text, or a Net (a Model or JSON is built into a Net on
    "cpu": that initialises every parameter, so a 140M-parameter VGG takes seconds and ~1.7 GB).

    Layer rows hold:

    - ``name``, ``type``, ``inputs``, ``device``;
    - ``shape``: the output per image, (C, H, W);
    - ``params``: number of parameters (weights and biases);
    - ``macs``: multiply-adds per image: conv out_h*out_w*filters*(in_channels/groups)*k*k,
      fc inputs*outputs; every other layer 0 (pooling, LRN, neurons, dropout, concat and the
      softmax do a few operations per value, not multiply-adds, and are left out as usual);
    - ``rf``, ``jump``: receptive field in input pixels (one side of the square) and the distance
      in input pixels between neighbouring outputs, by rf_out = rf_in + (k - 1) * jump_in,
      jump_out = jump_in * stride for conv and pool layers. An input layer has rf 1, jump 1;
      an fc layer counts as a conv whose kernel covers its whole input (so it sees everything
      its input sees); layers with several inputs take the largest rf and jump of their inputs;
      other layers pass them through. rf is not clipped to the image: padding lets it pass the
      border. Labels layers have rf and jump None.

    The totals row has ``name`` "total", ``type`` "total", ``params`` and ``macs`` (sums),
    ``param_bytes`` (float32 parameter memory), ``batch`` and ``output_bytes`` (the float32
    outputs of every layer for ``batch`` images: the forward activations the Net holds).
    """
    if batch < 1:
        raise ValueError(f"summary: batch must be >= 1, got {batch}")
    net = model_or_net if isinstance(model_or_net, Net) else Net(model_or_net, devices="cpu")

    rows: list[dict] = []
    by_name: dict[str, dict] = {}
    for layer in net.layers():
        name, kind = layer["name"], layer["type"]
        opts = layer["options"]  # as in effect: the engine's defaults filled in
        ins = [by_name[i] for i in layer["inputs"]]
        c, h, w = layer["shape"]
        macs = 0
        if kind in ("conv", "local"):  # local: the same products, with a filter bank per position
            k = opts["size"]
            in_channels = sum(i["shape"][0] for i in ins)
            macs = h * w * opts["filters"] * (in_channels // opts.get("groups", 1)) * k * k
        elif kind == "fc":
            macs = sum(_values(i["shape"]) for i in ins) * opts["outputs"]
        rf, jump = (1, 1) if layer["role"] == "input" else _receptive_field(kind, opts, ins)
        row = dict(name=name, type=kind, inputs=list(layer["inputs"]), device=layer["device"],
                   shape=(c, h, w), params=layer["params"], macs=macs, rf=rf, jump=jump)
        rows.append(row)
        by_name[name] = row

    params = sum(r["params"] for r in rows)
    rows.append(dict(name="total", type="total", params=params, macs=sum(r["macs"] for r in rows),
                     param_bytes=params * BYTES_PER_VALUE, batch=batch,
                     output_bytes=sum(_values(r["shape"]) for r in rows) * batch * BYTES_PER_VALUE))
    return rows


def _values(shape) -> int:
    c, h, w = shape
    return c * h * w


def _receptive_field(kind: str, opts: dict, ins: list[dict]) -> tuple[int | None, int | None]:
    """(rf, jump) of a layer's output from its inputs' (see summary)."""
    seen = [i for i in ins if i["rf"] is not None]  # labels carry no pixels
    if not seen:
        return None, None
    rf_in = max(i["rf"] for i in seen)
    jump_in = max(i["jump"] for i in seen)
    if kind == "rnorm":  # a spatial window, stride 1
        return rf_in + (opts["size"] - 1) * jump_in, jump_in
    if kind in ("conv", "pool", "local"):
        k = opts["size"]
        stride = opts["stride"] or k  # a pool's stride is optional: the window size

        return rf_in + (k - 1) * jump_in, jump_in * stride
    if kind == "fc":
        side = max(max(i["shape"][1], i["shape"][2]) for i in ins)
        return rf_in + (side - 1) * jump_in, jump_in * side
    return rf_in, jump_in


def format_summary(rows: list[dict]) -> str:
    """The rows of summary() as a fixed-width text table, with the totals underneath."""
    head = ("layer", "type", "output (CxHxW)", "params", "mult-adds", "rf", "jump")
    layers = [r for r in rows if r["type"] != "total"]
    totals = [r for r in rows if r["type"] == "total"]
    cells = [(r["name"], r["type"], "x".join(str(d) for d in r["shape"]), f"{r['params']:,}",
              f"{r['macs']:,}", "-" if r["rf"] is None else str(r["rf"]),
              "-" if r["jump"] is None else str(r["jump"])) for r in layers]
    total_cells = [("total", "", "", f"{t['params']:,}", f"{t['macs']:,}", "", "") for t in totals]
    widths = [max(len(line[i]) for line in [head] + cells + total_cells) for i in range(len(head))]

    def fmt(line):  # names and types left-aligned, numbers right-aligned
        return "  ".join(v.ljust(n) if i < 2 else v.rjust(n)
                         for i, (v, n) in enumerate(zip(line, widths))).rstrip()

    rule = "-" * len(fmt(head))
    lines = [fmt(head), rule] + [fmt(line) for line in cells]
    for t, line in zip(totals, total_cells):
        lines += [rule, fmt(line),
                  f"parameter memory: {_bytes(t['param_bytes'])}",
                  f"layer outputs for a batch of {t['batch']}: {_bytes(t['output_bytes'])}"]
    return "\n".join(lines)


def _bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:,.1f} MiB, float32)"
