"""convnet.summary (shapes, parameters, multiply-adds, receptive fields) and zoo.vgg."""

import functools
import json

import pytest

import convnet
from convnet import zoo
from convnet.summary import format_summary, summary

# Table 2 of Simonyan & Zisserman (2014), millions of parameters, and the exact counts at
# 224x224 and 1000 classes (vgg_params below; torchvision's vgg11/13/16/19 agree for A, B, D, E).
VGG_PAPER_MILLIONS = {"A": 133, "B": 133, "C": 134, "D": 138, "E": 144}
VGG_EXACT_224 = {"A": 132_863_336, "B": 133_047_848, "C": 133_638_952, "D": 138_357_544,
                 "E": 143_667_240}
# (in, out, k) of each conv, from table 1.
VGG_CONVS = {
    "A": [(3, 64, 3), (64, 128, 3), (128, 256, 3), (256, 256, 3), (256, 512, 3), (512, 512, 3),
          (512, 512, 3), (512, 512, 3)],
    "B": [(3, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3),
          (256, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3)],
}
VGG_CONVS["C"] = (VGG_CONVS["B"][:6] + [(256, 256, 1)] + VGG_CONVS["B"][6:8] + [(512, 512, 1)]
                  + VGG_CONVS["B"][8:] + [(512, 512, 1)])
VGG_CONVS["D"] = (VGG_CONVS["B"][:6] + [(256, 256, 3)] + VGG_CONVS["B"][6:8] + [(512, 512, 3)]
                  + VGG_CONVS["B"][8:] + [(512, 512, 3)])
VGG_CONVS["E"] = (VGG_CONVS["D"][:7] + [(256, 256, 3)] + VGG_CONVS["D"][7:10] + [(512, 512, 3)]
                  + VGG_CONVS["D"][10:] + [(512, 512, 3)])


def vgg_params(config, size, classes=1000):
    """Weights and biases of every conv, then fc6 (512 x (size/32)^2 inputs), fc7, fc8."""
    convs = sum(k * k * cin * cout + cout for cin, cout, k in VGG_CONVS[config])
    fc6_in = 512 * (size // 32) ** 2
    return convs + (fc6_in * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * classes + classes)


@functools.lru_cache(maxsize=None)
def vgg_rows(config):
    """summary of a VGG at 32x32 (fc6 reads 512 values): built once per configuration."""
    return summary(zoo.vgg(config, size=32))


def rows_by_name(rows):
    return {r["name"]: r for r in rows}


def conv_stack(n, k=3, stride=1):
    m = convnet.Model()
    h = m.input("data", channels=1, size=32)
    y = m.labels("labels")
    for i in range(1, n + 1):
        h = m.conv(f"conv{i}", h, filters=4, size=k, stride=stride, padding=k // 2)
    m.softmax_cost("cost", m.fc("fc", h, outputs=3), y)
    return m


# ---- VGG ----
def test_vgg_conv_counts_match_table_1():
    assert {c: len(v) for c, v in VGG_CONVS.items()} == {"A": 8, "B": 10, "C": 13, "D": 13, "E": 16}
    for config, convs in VGG_CONVS.items():
        layers = zoo.vgg(config).layers
        got = [(l["filters"], l["size"], l["padding"]) for l in layers if l["type"] == "conv"]
        assert got == [(cout, k, k // 2) for _, cout, k in convs], config
        weight_layers = sum(l["type"] in ("conv", "fc") for l in layers)
        assert weight_layers == {"A": 11, "B": 13, "C": 16, "D": 16, "E": 19}[config]


@pytest.mark.parametrize("config", "ABCDE")
def test_vgg_parameter_counts_match_table_2(config):
    # The Net at 32x32 counts what the formula counts ...
    rows = vgg_rows(config)
    assert rows[-1]["params"] == vgg_params(config, 32)
    assert rows_by_name(rows)["fc6"]["params"] == 512 * 4096 + 4096
    # ... so at 224 only fc6 changes (7x7x512 inputs): the exact count, and the paper's rounding.
    at_224 = rows[-1]["params"] - (512 * 4096) + (7 * 7 * 512 * 4096)
    assert at_224 == vgg_params(config, 224) == VGG_EXACT_224[config]
    assert round(at_224 / 1e6) == VGG_PAPER_MILLIONS[config]


def test_vgg_classes_change_only_fc8():
    rows = rows_by_name(summary(zoo.vgg("A", size=32, classes=10)))
    assert rows["fc8"]["params"] == 4096 * 10 + 10
    assert rows["total"]["params"] == vgg_params("A", 32, classes=10)


def test_vgg_shapes_and_training_options():
    rows = rows_by_name(vgg_rows("D"))
    assert rows["conv1_2"]["shape"] == (64, 32, 32)
    assert [rows[f"pool{b}"]["shape"] for b in range(1, 6)] == [
        (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)]
    assert rows["fc8"]["shape"] == (1000, 1, 1)
    spec = {l["name"]: l for l in zoo.vgg("D").layers}
    for name in ("conv1_1", "conv5_3", "fc6", "fc8"):
        assert spec[name]["wc"] == 0.0005 and spec[name]["momW"] == 0.9, name
    assert spec["drop6"]["rate"] == spec["drop7"]["rate"] == 0.5
    assert spec["drop6"]["inputs"] == ["fc6"] and spec["fc8"]["inputs"] == ["drop7"]
    assert spec["pool1"]["size"] == spec["pool1"]["stride"] == 2


def test_vgg_a_lrn_puts_lrn_after_conv1_1():
    layers = zoo.vgg("A", size=32, lrn=True).layers
    names = [l["name"] for l in layers]
    assert names[names.index("conv1_1") + 1] == "lrn1"
    assert {l["name"]: l for l in layers}["pool1"]["inputs"] == ["lrn1"]
    assert "lrn1" not in [l["name"] for l in zoo.vgg("A").layers]


@pytest.mark.parametrize("kwargs, words", [
    (dict(config="F"), ["'F'", "['A', 'B', 'C', 'D', 'E']"]),
    (dict(size=100), ["size 100", "32"]),
    (dict(config="B", lrn=True), ["A-LRN", "'B'"]),
])
def test_vgg_errors_name_the_culprit(kwargs, words):
    with pytest.raises(ValueError) as e:
        zoo.vgg(**kwargs)
    for w in words:
        assert w in str(e.value)


# ---- receptive fields ----
def test_two_stacked_3x3_convs_see_5x5_on_vgg():
    rows = rows_by_name(vgg_rows("B"))
    assert (rows["conv1_1"]["rf"], rows["conv1_2"]["rf"]) == (3, 5)
    assert rows["conv1_2"]["jump"] == 1
    # pool1 (2x2, stride 2): rf 6, jump 2; then two 3x3 convs add 2 * 2 * 2 = 8.
    assert (rows["pool1"]["rf"], rows["pool1"]["jump"]) == (6, 2)
    assert (rows["conv2_2"]["rf"], rows["conv2_2"]["jump"]) == (14, 2)


def test_three_stacked_3x3_convs_see_7x7():
    rows = rows_by_name(summary(conv_stack(3)))
    assert [rows[f"conv{i}"]["rf"] for i in (1, 2, 3)] == [3, 5, 7]
    assert rows["conv3"]["jump"] == 1


def test_strided_convs_multiply_the_jump():
    rows = rows_by_name(summary(conv_stack(3, k=3, stride=2)))
    # rf 3, then 3 + 2*2 = 7, then 7 + 2*4 = 15; jumps 2, 4, 8.
    assert [(rows[f"conv{i}"]["rf"], rows[f"conv{i}"]["jump"]) for i in (1, 2, 3)] == [
        (3, 2), (7, 4), (15, 8)]
    # fc as a conv covering its 4x4 input: 15 + 3 * 8.
    assert rows["fc"]["rf"] == 15 + 3 * 8
    assert rows["data"]["rf"] == 1 and rows["labels"]["rf"] is None


def test_alexnet_2012_totals_and_receptive_fields():
    net = convnet.Net(zoo.alexnet_2012())
    rows = summary(net)
    by = rows_by_name(rows)
    assert by["total"]["params"] == 60_965_224 == net.parameter_count
    assert by["total"]["param_bytes"] == 4 * 60_965_224
    assert (by["conv1a"]["rf"], by["conv1a"]["jump"]) == (11, 4)
    assert (by["pool1a"]["rf"], by["pool1a"]["jump"]) == (19, 8)
    assert (by["pool5b"]["rf"], by["pool5b"]["jump"]) == (195, 32)
    assert by["conv1a"]["shape"] == (48, 55, 55)
    # conv1: 55*55 outputs x 48 filters x 3*11*11; conv3 reads both towers (256 channels).
    assert by["conv1a"]["macs"] == 55 * 55 * 48 * 3 * 11 * 11
    assert by["conv3a"]["macs"] == 13 * 13 * 192 * 256 * 3 * 3
    assert by["fc6a"]["macs"] == 2 * 128 * 6 * 6 * 2048
    assert by["rnorm1a"]["macs"] == by["pool1a"]["macs"] == 0
    assert by["total"]["macs"] == sum(r["macs"] for r in rows[:-1])
    assert [r["name"] for r in rows[:-1]] == [l["name"] for l in net.layers()]


def test_multi_input_layers_take_the_largest_receptive_field():
    m = convnet.Model()
    x = m.input("data", channels=2, size=16)
    y = m.labels("labels")
    small = m.conv("small", x, filters=3, size=3, padding=1)
    big = m.conv("big", x, filters=5, size=7, padding=3)
    both = m.concat("both", [small, big])
    m.softmax_cost("cost", m.fc("fc", m.pool("pool", both, size=2), outputs=4), y)
    rows = rows_by_name(summary(m))
    assert rows["both"]["shape"] == (8, 16, 16)
    assert (rows["both"]["rf"], rows["both"]["jump"]) == (7, 1)
    assert (rows["pool"]["rf"], rows["pool"]["jump"]) == (8, 2)  # stride defaults to size
    assert rows["fc"]["macs"] == 8 * 8 * 8 * 4


def test_grouped_conv_macs_divide_by_groups():
    m = convnet.Model()
    x = m.input("data", channels=8, size=10)
    m.softmax_cost("cost", m.fc("fc", m.conv("conv", x, filters=6, size=3, groups=2), outputs=2),
                   m.labels("labels"))
    rows = rows_by_name(summary(m))
    assert rows["conv"]["shape"] == (6, 8, 8)
    assert rows["conv"]["params"] == 6 * 4 * 3 * 3 + 6
    assert rows["conv"]["macs"] == 8 * 8 * 6 * 4 * 3 * 3


# ---- inputs, totals and the table ----
def test_model_json_and_net_give_the_same_rows():
    m = zoo.fashion_alexnet()
    from_model = summary(m)
    assert summary(m.to_json()) == from_model
    on_two = summary(convnet.Net(m, devices=["cpu", "cpu:1"]))
    assert rows_by_name(on_two)["conv1b"]["device"] == "cpu:1"
    assert rows_by_name(from_model)["conv1b"]["device"] == "cpu:0"
    without_device = lambda rows: [{k: v for k, v in r.items() if k != "device"} for r in rows]
    assert without_device(on_two) == without_device(from_model)


def test_fashion_alexnet_summary():
    # Derived from the model's own definition, so the test holds while fashion_alexnet evolves.
    model = zoo.fashion_alexnet()
    rows = summary(model)
    by = rows_by_name(rows)
    spec = {l["name"]: l for l in model.layers}
    assert [r["name"] for r in rows[:-1]] == [l["name"] for l in convnet.Net(model).layers()]
    assert by["total"]["params"] == convnet.Net(model).parameter_count
    convs = [r for r in rows if r["type"] == "conv"]
    assert len(convs) >= 4
    for r in convs:
        s = spec[r["name"]]
        c_in = sum(by[i]["shape"][0] for i in r["inputs"])
        _, h, w = r["shape"]
        assert r["macs"] == h * w * s["filters"] * (c_in // s.get("groups", 1)) * s["size"] ** 2
        assert r["rf"] == max(by[i]["rf"] for i in r["inputs"]) + (s["size"] - 1) * max(
            by[i]["jump"] for i in r["inputs"])
    first = spec[convs[0]["name"]]
    assert (convs[0]["rf"], convs[0]["jump"]) == (first["size"], first.get("stride", 1))
    assert by["cost"]["shape"] == (10, 1, 1)
    assert "total" in format_summary(rows)


def test_batch_scales_output_memory_only():
    one, eight = summary(zoo.small_convnet())[-1], summary(zoo.small_convnet(), batch=8)[-1]
    assert eight["output_bytes"] == 8 * one["output_bytes"]
    assert eight["params"] == one["params"] and eight["macs"] == one["macs"]
    # data 1x28x28, labels 1, conv1 16x28x28, pool1 and rnorm1 16x13x13, conv2 32x13x13,
    # pool2 32x6x6, fc3 and cost 10.
    values = 784 + 1 + 16 * 784 + 2 * 16 * 169 + 32 * 169 + 32 * 36 + 2 * 10
    assert one["output_bytes"] == 4 * values
    with pytest.raises(ValueError, match="batch"):
        summary(zoo.small_convnet(), batch=0)


def test_format_summary_table():
    text = format_summary(summary(zoo.small_convnet()))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "(CxHxW)", "params", "mult-adds", "rf",
                                "jump"]
    conv2 = next(l for l in lines if l.startswith("conv2 "))
    assert conv2.split() == ["conv2", "conv", "32x13x13", "4,640", f"{13 * 13 * 32 * 16 * 9:,}",
                             "11", "2"]
    total = next(l for l in lines if l.startswith("total"))
    assert "16,586" in total
    assert "parameter memory: 66,344 bytes" in text
    assert len({len(l) for l in lines[:3]}) == 1  # header, rule and first row line up


def test_invalid_model_error_comes_from_the_engine():
    m = convnet.Model()
    m.input("data", channels=1, size=4)
    m.conv("conv", "data", filters=2, size=7)
    with pytest.raises(ValueError, match="conv"):
        summary(m)
    with pytest.raises(ValueError):
        summary(json.dumps({"layers": [{"name": "x", "type": "nope"}]}))
