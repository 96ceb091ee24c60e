"""Layer types as the engine declares them: Model's methods, defaults, roles, and the second cost
layer (sum2_cost, cuda-convnet2's cost.sum2) in training."""

import inspect
import math

import numpy as np
import pytest

import convnet


def test_every_declared_type_has_a_model_method_with_the_declared_defaults():
    types = convnet.layer_types()
    assert {"conv", "fc", "lrn", "pool", "softmax_cost", "sum2_cost"} <= set(types)
    for name, decl in types.items():
        sig = inspect.signature(getattr(convnet.Model, name))
        for o in decl["options"]:
            p = sig.parameters[o["name"]]
            if o["presence"] == "required":
                assert p.default is inspect.Parameter.empty, (name, o["name"])
            elif o["presence"] == "defaulted":
                assert p.default == o["default"], (name, o["name"])
        assert getattr(convnet.Model, name).__doc__.startswith(decl["help"])
    # The paper's LRN constants, written once in C++ (lrn_layer.cpp), reach Python.
    lrn = inspect.signature(convnet.Model.lrn).parameters
    assert (lrn["size"].default, lrn["k"].default, lrn["alpha"].default, lrn["beta"].default) == (5, 2.0, 1e-4, 0.75)


def test_methods_write_only_what_is_given_and_the_engine_fills_in_the_rest():
    m = convnet.Model()
    x = m.input("data", 3, 8)
    m.labels("labels")
    h = m.conv("conv1", x, 4, 3, padding=1)
    h = m.lrn("norm1", h)
    h = m.pool("pool1", h, 2)
    m.softmax_cost("cost", m.fc("fc", h, 5), "labels")
    assert m.layers[2] == {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 4, "size": 3, "padding": 1}
    assert m.layers[3] == {"name": "norm1", "type": "lrn", "inputs": ["conv1"]}
    layers = {l["name"]: l for l in convnet.Net(m).layers()}
    assert layers["norm1"]["options"] == {"size": 5, "k": 2.0, "alpha": 1e-4, "beta": 0.75}
    assert layers["conv1"]["options"]["stride"] == 1 and layers["conv1"]["options"]["wc"] == 0.0005
    assert layers["pool1"]["options"]["stride"] is None  # optional: the window size
    assert layers["pool1"]["shape"] == (4, 4, 4)
    assert [l["role"] for l in layers.values()] == ["input", "labels", "hidden", "hidden", "hidden", "hidden", "cost"]


def test_a_misspelt_option_is_an_error_in_python_and_in_the_engine():
    m = convnet.Model()
    x = m.input("data", 1, 8)
    with pytest.raises(TypeError, match=r"Model.conv\('conv1'\): got an unexpected keyword argument 'pading'"):
        m.conv("conv1", x, filters=4, size=3, pading=1)
    with pytest.raises(TypeError, match=r"Model.conv\('conv1'\): missing a required argument: 'filters'"):
        m.conv("conv1", x, filter=4, size=3)
    m.add("conv1", "conv", x, filters=4, size=3, pading=1)
    with pytest.raises(ValueError, match=r"layer 'conv1': unknown option 'pading' \(conv layers take: filters, size, "
                                         r"stride, padding"):
        convnet.Net(m)


def test_the_layers_command_prints_the_declarations(capsys):
    from convnet import cli

    assert cli.main(["layers", "lrn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lrn (hidden): ")
    assert "  inputs: 1\n" in out
    assert "alpha       float   default 0.0001" in out
    assert cli.main(["layers", "softmax_cost"]) == 0
    assert "softmax_cost (cost, classifies)" in capsys.readouterr().out
    assert cli.main(["layers", "nope"]) == 2
    assert "no layer type 'nope' (known: concat, conv," in capsys.readouterr().err


def sum2_net(coeff=0.5):
    m = convnet.Model()
    x = m.input("data", 2, 4)
    y = m.labels("labels")
    h = m.fc("fc1", x, 6, neuron="tanh", initW=0.3)
    m.softmax_cost("cost", m.fc("fc2", h, 3, initW=0.3), y)
    m.sum2_cost("code", h, coeff=coeff)
    return m


def test_sum2_cost_reports_the_mean_sum_of_squares_and_its_gradients_check(rng):
    net = convnet.Net(sum2_net(0.5), seed=2)
    assert net.cost_layers == ["cost", "code"]
    x, y = rng.normal(size=(5, 2, 4, 4)).astype(np.float32), rng.integers(0, 3, 5)
    r = net.forward(x, y)
    code = net.output("fc1").reshape(5, -1).astype(np.float64)
    by_name = {c["layer"]: c for c in r["costs"]}
    want = (code ** 2).sum(1).mean()
    assert by_name["code"]["cost"] == pytest.approx(want, rel=1e-6)
    assert math.isnan(by_name["code"]["top1_error"])  # it does not classify
    assert r["objective"] == pytest.approx(by_name["cost"]["cost"] + 0.5 * want, rel=1e-6)
    results = convnet._core.check_gradients(net._net, 1e-2, 16, 2e-2, 7)
    assert results and all(c["ok"] for c in results), results


def test_sum2_cost_shrinks_the_code_it_reads_in_training(problem):
    """The effect, on the generated problem: 300 SGD steps with a sum2 cost (coeff 0.001) on the
    hidden code shrink its energy (mean sum of squares per case) to a fraction of what the same
    run without it reaches, and the classifier still learns. Seen: energy 704 -> 139, held-out
    accuracy 0.870 -> 0.896 (coeff 0.01 shrinks it to 22 and accuracy to 0.34)."""
    def run(coeff):
        m = convnet.Model()
        x = m.input("data", 1, 16)
        y = m.labels("labels")
        h = m.conv("conv1", x, 16, 5, padding=2, neuron="relu", init="kaiming")
        h = m.pool("pool1", h, 2)
        h = m.fc("code", h, 64, neuron="relu", init="kaiming")
        m.softmax_cost("cost", m.fc("fc2", h, 10, init="kaiming"), y)
        if coeff:
            m.sum2_cost("energy", h, coeff=coeff)
        net = convnet.Net(m, seed=4)
        rng = np.random.default_rng(5)
        for _ in range(300):
            net.train_step(*problem.batch(32, rng))
        test_x, test_y = problem.batch(500, np.random.default_rng(99))
        net.forward(test_x, test_y, train=False)
        energy = float((net.output("code").reshape(500, -1).astype(np.float64) ** 2).sum(1).mean())
        accuracy = float((net.predict(test_x).argmax(1) == test_y).mean())
        return energy, accuracy

    plain_energy, plain_accuracy = run(0.0)
    energy, accuracy = run(0.001)
    print(f"code energy {plain_energy:.1f} -> {energy:.1f}; accuracy {plain_accuracy:.3f} -> {accuracy:.3f}")
    assert energy < 0.35 * plain_energy
    assert plain_accuracy >= 0.8 and accuracy >= 0.8


def test_rnorm_and_local_for_cuda_convnet2_models():
    # Model.rnorm and Model.local come from the C++ declarations, with their option names.
    rnorm = inspect.signature(convnet.Model.rnorm).parameters
    assert (rnorm["size"].default, rnorm["k"].default, rnorm["beta"].default) == (5, 1.0, 0.75)
    assert rnorm["alpha"].default is inspect.Parameter.empty  # required: cfg scale / size^2
    m = convnet.Model()
    x = m.input("data", 4, 6)
    m.labels("labels")
    h = m.local("local3", x, 5, 3, padding=1, neuron="relu")
    h = m.rnorm("rnorm3", h, size=3, alpha=0.001 / 9)
    m.softmax_cost("cost", m.fc("fc", h, 3), "labels")
    net = convnet.Net(m)
    layers = {l["name"]: l for l in net.layers()}
    assert layers["local3"]["shape"] == (5, 6, 6) and layers["rnorm3"]["shape"] == (5, 6, 6)
    assert layers["rnorm3"]["options"]["k"] == 1.0
    # Unshared weights: a bank per output position, a bias per filter per position.
    assert net.get_param("local3.weights").shape == (36, 5, 4, 3, 3)
    assert net.get_param("local3.biases").shape == (5, 6, 6)
    assert net.parameter_count == 36 * 5 * 4 * 9 + 36 * 5 + 5 * 36 * 3 + 3
    out = net.forward(np.random.default_rng(0).normal(size=(2, 4, 6, 6)).astype(np.float32), np.array([0, 2]))
    assert math.isfinite(out["objective"]) and out["objective"] > 0
    rows = {r["name"]: r for r in convnet.summary.summary(m)}
    assert rows["local3"]["macs"] == 6 * 6 * 5 * 4 * 3 * 3 and rows["local3"]["rf"] == 3
    assert rows["rnorm3"]["rf"] == 5 and rows["rnorm3"]["jump"] == 1
