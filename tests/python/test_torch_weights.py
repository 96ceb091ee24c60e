"""convnet.torchvision_weights: torchvision AlexNet/VGG state_dicts in and out, as safetensors.

The fixture (tests/data/torchvision/, written by tests/data/make_torch_fixture.py with PyTorch)
holds narrow torchvision-shaped nets' weights, an input batch and PyTorch's outputs, so the
import is checked against PyTorch without torch installed. Where torch is importable, the round
trips run live as well.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import convnet
from convnet import Model, Net, zoo
from convnet import torchvision_weights as tvw

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "torchvision"
ARCHS = ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19"]


def fixture_io():
    with safe_open(str(FIXTURE / "io.safetensors"), framework="numpy") as f:
        meta = f.metadata()
        io = {k: f.get_tensor(k) for k in f.keys()}
    x = io["input"].astype(np.float32) / 64 - 2  # the scale the fixture's metadata names
    assert meta["scale"] == "input / 64 - 2"
    return x, io, json.loads(meta["widths"]), json.loads(meta["vgg_blocks"])


def alexnet_model(convs, hidden, classes, size=224):
    """zoo.alexnet_one_tower's structure with chosen widths."""
    m = Model()
    h = m.input("data", channels=3, size=size)
    m.labels("labels")
    for i, (width, k, stride, pad) in enumerate(zip(convs, (11, 5, 3, 3, 3), (4, 1, 1, 1, 1),
                                                    (2, 2, 1, 1, 1)), start=1):
        h = m.conv(f"conv{i}", h, filters=width, size=k, stride=stride, padding=pad, neuron="relu")
        if i in (1, 2, 5):
            h = m.pool(f"pool{i}", h, size=3, stride=2)
    for n in (6, 7):
        h = m.dropout(f"drop{n}", m.fc(f"fc{n}", h, outputs=hidden, neuron="relu"), rate=0.5)
    m.softmax_cost("cost", m.fc("fc8", h, outputs=classes), "labels")
    return m


def vgg_model(convs_per_block, blocks, hidden, classes, size=224):
    """zoo.vgg's structure with chosen widths."""
    m = Model()
    h = m.input("data", channels=3, size=size)
    m.labels("labels")
    for b, (n, width) in enumerate(zip(convs_per_block, blocks), start=1):
        for i in range(1, n + 1):
            h = m.conv(f"conv{b}_{i}", h, filters=width, size=3, padding=1, neuron="relu")
        h = m.pool(f"pool{b}", h, size=2, stride=2)
    for n in (6, 7):
        h = m.dropout(f"drop{n}", m.fc(f"fc{n}", h, outputs=hidden, neuron="relu"), rate=0.5)
    m.softmax_cost("cost", m.fc("fc8", h, outputs=classes), "labels")
    return m


def narrow_net(arch, seed=1):
    _, _, widths, blocks = fixture_io()
    if arch == "alexnet":
        return Net(alexnet_model(**widths["alexnet"]), seed=seed)
    return Net(vgg_model(blocks[arch], **widths["vgg"]), seed=seed)


def logits(net, x):
    return net.predict(x, output="fc8").reshape(len(x), -1)


def assert_same_outputs(got, want):
    # rtol 1e-4 against the largest logit: float32 sums in another order, nothing more.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---- PyTorch's outputs, from the committed fixture ----
@pytest.mark.parametrize("arch", ARCHS)
def test_fixture_weights_give_torchs_outputs(arch):
    x, io, _, _ = fixture_io()
    want = io[f"logits.{arch}"]
    # The two cases differ by far more than the tolerance: a mixed-up batch would fail.
    assert np.abs(want[0] - want[1]).max() > 100 * 1e-4 * np.abs(want).max()
    net = narrow_net(arch)
    before = logits(net, x)
    assert tvw.import_state_dict(net, FIXTURE / f"{arch}.safetensors") == arch
    assert not np.allclose(before, want, rtol=1e-2)  # the seeded net alone does not pass
    assert_same_outputs(logits(net, x), want)


def test_fc6_needs_no_permutation_and_the_fixture_would_catch_one():
    """convnet's fc6 reads the pool5 output of a case in (channel, row, column) order, as
    torch.flatten of NCHW: the fixture passes unpermuted (above), and fails with the columns in
    (row, column, channel) order."""
    x, io, widths, _ = fixture_io()
    net = narrow_net("alexnet")
    tvw.import_state_dict(net, FIXTURE / "alexnet.safetensors")
    w = net.get_param("fc6.weights")
    c = widths["alexnet"]["convs"][-1]
    hwc = w.reshape(-1, c, 6, 6).transpose(0, 2, 3, 1).reshape(w.shape)
    net.set_param("fc6.weights", hwc)
    assert not np.allclose(logits(net, x), io["logits.alexnet"], rtol=1e-2, atol=0)


def test_bfloat16_file_converted():
    x, io, _, _ = fixture_io()
    f32, bf16 = narrow_net("alexnet"), narrow_net("alexnet")
    tvw.import_state_dict(f32, FIXTURE / "alexnet.safetensors")
    tvw.import_state_dict(bf16, FIXTURE / "alexnet_bf16.safetensors")
    for name in f32.param_names():
        a, b = f32.get_param(name), bf16.get_param(name)
        assert b.dtype == np.float32
        assert not np.array_equal(a, b) or name.endswith("biases")
        np.testing.assert_allclose(b, a, rtol=2 ** -8, atol=0)  # bfloat16 keeps 8 bits
    np.testing.assert_allclose(logits(bf16, x), io["logits.alexnet"], rtol=0.05, atol=0.05 * np.abs(io["logits.alexnet"]).max())


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_files_converted(tmp_path, dtype):
    state = load_file(str(FIXTURE / "vgg11.safetensors"))
    path = tmp_path / "w.safetensors"
    save_file({k: v.astype(dtype) for k, v in state.items()}, str(path))
    net = narrow_net("vgg11")
    tvw.import_state_dict(net, path)
    np.testing.assert_array_equal(net.get_param("conv1_1.weights"),
                                  state["features.0.weight"].astype(dtype).astype(np.float32))


# ---- export ----
@pytest.mark.parametrize("arch", ARCHS)
def test_export_writes_torchvisions_keys_and_imports_back(tmp_path, arch):
    x, _, _, _ = fixture_io()
    net = narrow_net(arch, seed=3)
    path = tmp_path / f"{arch}.safetensors"
    assert tvw.export_state_dict(net, path) == arch
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    written = load_file(str(path))
    fixture = load_file(str(FIXTURE / f"{arch}.safetensors"))
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in fixture.items()}
    assert all(v.dtype == np.float32 for v in written.values())
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata()["arch"] == arch
    other = narrow_net(arch, seed=4)
    tvw.import_state_dict(other, path)
    for name in net.param_names():
        np.testing.assert_array_equal(other.get_param(name), net.get_param(name))
    np.testing.assert_array_equal(logits(other, x), logits(net, x))


def test_zoo_alexnet_one_tower_is_torchvisions_alexnet():
    net = Net(zoo.alexnet_one_tower(classes=10))
    arch, pairs = tvw._resolve(net, None)
    assert arch == "alexnet"
    assert pairs == [("conv1", "features.0"), ("conv2", "features.3"), ("conv3", "features.6"),
                     ("conv4", "features.8"), ("conv5", "features.10"), ("fc6", "classifier.1"),
                     ("fc7", "classifier.4"), ("fc8", "classifier.6")]
    # torchvision.models.alexnet(num_classes=10)'s shapes.
    assert net.get_param("conv1.weights").shape == (64, 3, 11, 11)
    assert net.get_param("fc6.weights").shape == (4096, 256 * 6 * 6)


@pytest.mark.parametrize("config,arch", [("A", "vgg11"), ("B", "vgg13"), ("D", "vgg16"), ("E", "vgg19")])
def test_zoo_vgg_structure_found_but_only_at_224(tmp_path, config, arch):
    """The zoo's VGGs are torchvision's structure; at 32x32 the last pool gives 1x1, which
    torchvision's avgpool would spread to 7x7: refused, naming the size."""
    net = Net(zoo.vgg(config=config, size=32, classes=10))
    with pytest.raises(ValueError, match=rf"'pool5' gives 512x1x1; torchvision's {arch} pools to 7x7"):
        tvw.export_state_dict(net, tmp_path / "unused.safetensors")


def test_vgg_a_at_224_maps_like_torchvision():
    net = Net(zoo.vgg(config="A", classes=10))
    arch, pairs = tvw._resolve(net, None)
    assert arch == "vgg11"
    assert [p for _, p in pairs] == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)] + \
        [f"classifier.{i}" for i in (0, 3, 6)]


# ---- nets that are not torchvision's ----
def test_other_structures_refused_naming_the_layer(tmp_path):
    with pytest.raises(ValueError, match=r"alexnet: layer 'conv1' \(hidden layer 1\) is conv 5x5 "
                                         r"stride 1 padding 2 neuron relu.*alexnet has conv 11x11 stride 4"):
        tvw.export_state_dict(Net(zoo.small_convnet()), tmp_path / "unused.safetensors")
    with pytest.raises(ValueError, match=r"layer 'conv1b' reads \['data'\], not the one layer before it \('pool2a'\)"):
        tvw.export_state_dict(Net(zoo.fashion_alexnet()), tmp_path / "unused.safetensors")
    with pytest.raises(ValueError, match=r"layer 'lrn1' is LRN: torchvision's vgg11 has none"):
        tvw.export_state_dict(Net(zoo.vgg(config="A", lrn=True, size=32)), tmp_path / "unused.safetensors", arch="vgg11")
    with pytest.raises(ValueError, match=r"vgg16: layer 'conv3_3' \(hidden layer 9\) is conv 1x1 stride 1 padding 0.*"
                                         r"torchvision has no VGG C"):
        tvw.export_state_dict(Net(zoo.vgg(config="C", size=32)), tmp_path / "unused.safetensors")
    with pytest.raises(ValueError, match=r"not torchvision's vgg11: layer 'conv1' .* is conv 11x11"):
        tvw.export_state_dict(narrow_net("alexnet"), tmp_path / "unused.safetensors", arch="vgg11")
    with pytest.raises(ValueError, match=r"unknown arch 'resnet18'; choose one of"):
        tvw.import_state_dict(narrow_net("alexnet"), FIXTURE / "alexnet.safetensors", arch="resnet18")


def test_the_papers_dropout_is_refused(tmp_path):
    # inverted=false scales by 1 - rate in eval mode, which torchvision's dropout does not
    m = alexnet_model([8, 16, 16, 16, 8], 16, 10)
    drops = [l for l in m.layers if l["type"] == "dropout"]
    assert drops, "the AlexNet builder has dropout layers"
    drops[0]["inverted"] = False
    with pytest.raises(ValueError, match=rf"layer '{drops[0]['name']}' is the paper's dropout"):
        tvw.export_state_dict(Net(m), tmp_path / "unused.safetensors", arch="alexnet")


def test_other_pools_and_neurons_are_differences(tmp_path):
    m = alexnet_model([8, 16, 16, 16, 8], 16, 10)
    m.layers[[l["name"] for l in m.layers].index("pool2")]["pool"] = "avg"
    with pytest.raises(ValueError, match=r"'pool2' .* is avg pool 3x3 stride 2 \(pool='avg' \(torchvision: 'max'\)\)"):
        tvw.export_state_dict(Net(m), tmp_path / "unused.safetensors", arch="alexnet")
    m = alexnet_model([8, 16, 16, 16, 8], 16, 10)
    m.layers[[l["name"] for l in m.layers].index("pool1")]["ceil"] = True
    with pytest.raises(ValueError, match=r"'pool1' .* is max pool 3x3 stride 2 \(ceil=True\)"):
        tvw.export_state_dict(Net(m), tmp_path / "unused.safetensors", arch="alexnet")
    m = alexnet_model([8, 16, 16, 16, 8], 16, 10)
    m.layers[[l["name"] for l in m.layers].index("fc7")]["neuron"] = "tanh"
    with pytest.raises(ValueError, match=r"'fc7' .* is fc neuron tanh \(neuron='tanh' \(torchvision: 'relu'\)\)"):
        tvw.export_state_dict(Net(m), tmp_path / "unused.safetensors", arch="alexnet")


# ---- bad files ----
def write_bad(tmp_path, change):
    state = load_file(str(FIXTURE / "alexnet.safetensors"))
    change(state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("classifier.4.bias"),
     r"missing key 'classifier.4.bias' \(alexnet's fc7.biases, shape \(16,\)\)"),
    (lambda s: s.update({"features.1.weight": np.zeros(3, np.float32)}),
     r"unexpected key 'features.1.weight' \(1 in all\)"),
    (lambda s: s.update({"features.3.weight": np.zeros((16, 8, 3, 3), np.float32)}),
     r"key 'features.3.weight' has shape \(16, 8, 3, 3\); the net's conv2.weights needs \(16, 8, 5, 5\)"),
    (lambda s: s.update({"classifier.6.bias": np.arange(10, dtype=np.int64)}),
     r"key 'classifier.6.bias' is I64; expected floating point"),
])
def test_bad_files_name_the_key_and_change_nothing(tmp_path, change, message):
    net = narrow_net("alexnet")
    before = net.state_dict()
    with pytest.raises(ValueError, match=message):
        tvw.import_state_dict(net, write_bad(tmp_path, change))
    for name, value in before.items():
        np.testing.assert_array_equal(net.get_param(name), value)


def test_dataparallel_prefix_hinted(tmp_path):
    path = write_bad(tmp_path, lambda s: s.update({f"module.{k}": s.pop(k) for k in list(s)}))
    with pytest.raises(ValueError, match=r"missing key 'features.0.weight'.*start with 'module.'"):
        tvw.import_state_dict(narrow_net("alexnet"), path)


# ---- live, where torch is importable ----
def torch_builders():
    spec = importlib.util.spec_from_file_location("make_torch_fixture", DATA / "make_torch_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch", ARCHS)
def test_live_convnet_to_torch_and_back(tmp_path, arch):
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    fixture = torch_builders()
    x, _, _, _ = fixture_io()
    net = narrow_net(arch, seed=5)
    tvw.export_state_dict(net, tmp_path / "out.safetensors")
    model = fixture.build(arch).eval()
    model.load_state_dict(st.load_file(str(tmp_path / "out.safetensors")), strict=True)
    with torch.no_grad():
        assert_same_outputs(model(torch.from_numpy(x)).numpy(), logits(net, x))

    # torch -> convnet: a freshly seeded torch model's weights.
    torch.manual_seed(7)
    model = fixture.build(arch).eval()
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "in.safetensors"))
    tvw.import_state_dict(net, tmp_path / "in.safetensors")
    with torch.no_grad():
        assert_same_outputs(logits(net, x), model(torch.from_numpy(x)).numpy())


def test_live_full_size_alexnet_loads_into_torchvision_shapes(tmp_path):
    """The zoo's full alexnet_one_tower exports to exactly the keys and shapes of
    torchvision.models.alexnet (the fixture's builder at full width, which
    make_torch_fixture.py checks against torchvision itself where it is importable)."""
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    fixture = torch_builders()
    net = Net(zoo.alexnet_one_tower(classes=1000))
    tvw.export_state_dict(net, tmp_path / "alexnet.safetensors")
    model = fixture.build("alexnet", fixture.FULL["alexnet"]).eval()
    model.load_state_dict(st.load_file(str(tmp_path / "alexnet.safetensors")), strict=True)
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        assert_same_outputs(model(torch.from_numpy(x)).numpy(), logits(net, x))


def test_live_lrn_alpha_is_torchs_times_size():
    """convnet's lrn alpha multiplies the sum of squares; nn.LocalResponseNorm divides its alpha
    by size first: the same layer is LocalResponseNorm(size, alpha=alpha * size, beta, k) (what
    docs/TORCH_WEIGHTS.md says for VGG A-LRN, which torchvision lacks)."""
    torch = pytest.importorskip("torch")
    m = Model()
    m.lrn("lrn", m.input("data", channels=7, size=5), size=5, alpha=1e-2, beta=0.75, k=2)
    x = np.random.default_rng(1).normal(0, 3, (2, 7, 5, 5)).astype(np.float32)
    got = Net(m).predict(x, output="lrn")
    torch_lrn = torch.nn.LocalResponseNorm(5, alpha=1e-2 * 5, beta=0.75, k=2)
    want = torch_lrn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, torch.nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2)(
        torch.from_numpy(x)).numpy(), rtol=1e-3)
