"""Model files in and out from Python and the `convnet` command: cuda-convnet2's cfg pair read
(the paper's 60,965,224 parameters), converted both ways, trained; docs/MODEL_FILES.md's layer
reference is the engine's own."""
import os
import re

import numpy as np
import pytest

import convnet
from convnet import _core, cli

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CC2 = os.path.join(ROOT, "tests", "data", "cuda-convnet2")
DATA = "generated[count=256;classes=4;channels=1;size=16;seed=3]"


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_summary_of_the_papers_two_gpu_file(capsys):
    rc, out, _ = run(capsys, "summary", os.path.join(CC2, "layers-imagenet-2gpu-model.cfg"))
    assert rc == 0
    assert "input 224x224" in out  # the assumed size is said
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "60,965,224" in total, total
    assert re.search(r"conv1a\s+conv\s+48x55x55", out), out  # cuda-convnet2 rounds up: 1 + ceil(213 / 4)


def test_model_load_needs_the_size_and_finds_the_params_file(tmp_path):
    path = os.path.join(CC2, "layers-cifar10-11pct.cfg")
    with pytest.raises(ValueError, match="give the image size"):
        convnet.Model.load(path)
    model = convnet.Model.load(path, size=24)
    net = convnet.Net(model)
    assert tuple(net.output_shape("local3"))[:3] == (64, 6, 6)
    assert net.parameter_count == ((64 * 3 * 25 + 64) + (64 * 64 * 25 + 64) + (36 * 64 * 64 * 9 + 36 * 64)
                                   + (36 * 32 * 64 * 9 + 36 * 32) + (6 * 6 * 32 * 10 + 10))
    other = tmp_path / "model.cfg"
    other.write_text(open(path).read())
    with pytest.raises(ValueError, match="layer_params"):
        convnet.Model.load(str(other), size=24)


def test_convert_both_ways_gives_the_same_net(tmp_path, capsys):
    src = os.path.join(ROOT, "configs", "fashion_alexnet.json")
    rc, out, _ = run(capsys, "convert", src, str(tmp_path / "layers-f.cfg"))
    assert rc == 0 and (tmp_path / "layer-params-f.cfg").exists(), out
    rc, out, _ = run(capsys, "convert", str(tmp_path / "layers-f.cfg"), str(tmp_path / "back.json"), "--size", "28")
    assert rc == 0, out
    a = convnet.Net(convnet.Model.load(src))
    b = convnet.Net(convnet.Model.load(str(tmp_path / "back.json")))
    assert [l["name"] for l in a.layers()] == [l["name"] for l in b.layers()]
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(1).uniform(0, 255, (6, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    # and the cfg written from the JSON read back is the same file
    rc, _, _ = run(capsys, "convert", str(tmp_path / "back.json"), str(tmp_path / "layers-g.cfg"))
    assert (tmp_path / "layers-g.cfg").read_text() == (tmp_path / "layers-f.cfg").read_text()
    assert (tmp_path / "layer-params-g.cfg").read_text() == (tmp_path / "layer-params-f.cfg").read_text()


def test_convert_errors_name_the_culprit(tmp_path, capsys):
    with pytest.raises(SystemExit, match="target is a .json model or a cuda-convnet2 layers"):
        cli.main(["convert", os.path.join(ROOT, "configs", "small_convnet.json"), str(tmp_path / "x.txt")])
    with pytest.raises(SystemExit, match="--target-params"):
        cli.main(["convert", os.path.join(ROOT, "configs", "small_convnet.json"), str(tmp_path / "model.cfg")])
    bad = tmp_path / "layers-bad.cfg"
    bad.write_text(open(os.path.join(CC2, "layers-cifar10-11pct.cfg")).read().replace("filterSize=5", "filtersize=5\nfilterSise=5", 1))
    (tmp_path / "layer-params-bad.cfg").write_text(open(os.path.join(CC2, "layer-params-cifar10-11pct.cfg")).read())
    rc, _, err = run(capsys, "convert", str(bad), str(tmp_path / "x.json"), "--size", "24")
    assert rc != 0 and re.search(r"layers-bad.cfg:17: section \[conv1\], key 'filterSise': not a key", err), err
    assert not (tmp_path / "x.json").exists()


def test_train_a_cfg_model(tmp_path, capsys):
    """`convnet train` on a cfg pair: the data set gives the image size; the per-layer schedule
    (epsW=exp[...]) sets that layer's rate."""
    layers = tmp_path / "layers-t.cfg"
    layers.write_text("""[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=1
filters=8
filterSize=3
padding=1
initW=0.1
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
channels=8
sizeX=2
stride=2
[fc2]
type=fc
inputs=pool1
outputs=4
initW=0.05
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
""")
    (tmp_path / "layer-params-t.cfg").write_text("""[conv1]
epsW=exp[base=0.02;tgtFactor=100]
epsB=0.02
momW=0.9
momB=0.9
[fc2]
epsW=0.02
epsB=0.02
momW=0.9
momB=0.9
[logprob]
coeff=1
""")
    rc, out, err = run(capsys, "train", str(layers), "--data", DATA, "--epochs", "2", "--batch", "32",
                       "--save-dir", str(tmp_path / "run"), "--quiet", "--no-plots")
    assert rc == 0, out + err
    assert "done: 2 epochs" in out, out
    model = convnet.Model.load(str(layers), size=16)
    conv1 = next(l for l in model.layers if l["name"] == "conv1")
    assert conv1["epsW"] == 0.02 and conv1["scheduleW"] == "exp[tgtFactor=100]"


def test_docs_layer_reference_is_the_engines():
    page = open(os.path.join(ROOT, "docs", "MODEL_FILES.md")).read()
    begin, end = "<!-- layer-types: begin -->\n", "<!-- layer-types: end -->"
    section = page[page.index(begin) + len(begin):page.index(end)]
    assert section.strip() == cli.layer_types_markdown().strip(), (
        "docs/MODEL_FILES.md's layer reference is stale: regenerate it with `convnet layers --markdown`")
