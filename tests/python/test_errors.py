"""Bad input gets a clear ValueError naming the culprit, never a crash."""

import numpy as np
import pytest

import convnet


def base():
    m = convnet.Model()
    m.input("data", channels=3, size=8)
    m.labels("labels")
    return m


def with_cost(m, scores):
    m.softmax_cost("cost", scores, "labels")
    return m


def test_unknown_layer_type():
    m = base()
    m.add("c1", "convolution", "data")
    with pytest.raises(ValueError, match=r"layer 'c1': unknown layer type 'convolution'"):
        convnet.Net(m)


def test_missing_input():
    m = base()
    m.conv("c1", "dat", filters=4, size=3)
    with pytest.raises(ValueError, match=r"layer 'c1' reads 'dat', which no layer defines"):
        convnet.Net(m)


def test_cyclic_inputs():
    m = base()
    m.neuron("a", "b")
    m.neuron("b", "a")
    with pytest.raises(ValueError, match=r"cycle among layers: a, b"):
        convnet.Net(m)


def test_sizes_that_do_not_fit():
    m = base()
    m.conv("c1", "data", filters=4, size=3)
    m.pool("p1", "c1", size=7)
    with pytest.raises(ValueError, match=r"layer 'p1' \(pool\): pool size 7 is larger than the input 6x6"):
        convnet.Net(m)


def test_unknown_top_level_key():
    import json
    doc = json.loads(with_cost(base(), "data").to_json())
    doc["layer_params"] = {}
    with pytest.raises(ValueError, match=r"unknown top-level key 'layer_params'"):
        convnet.Net(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unknown top-level key 'layer_params'"):
        convnet.Model.from_json(json.dumps(doc))


def test_misspelt_option():
    m = base()
    with pytest.raises(TypeError, match=r"Model.conv\('c1'\): got an unexpected keyword argument 'paddding' "
                                        r"\(conv layers take: filters, size, stride, padding"):
        m.conv("c1", "data", filters=4, size=3, paddding=1)
    m.add("c1", "conv", "data", filters=4, size=3, paddding=1)  # written by hand: the engine says it
    with pytest.raises(ValueError, match=r"layer 'c1': unknown option 'paddding'"):
        convnet.Net(m)


def test_bad_neuron_name():
    m = base()
    m.conv("c1", "data", filters=4, size=3, neuron="relu6")
    with pytest.raises(ValueError, match=r"unknown neuron 'relu6'"):
        convnet.Net(m)


def test_bad_device_string():
    with pytest.raises(ValueError, match=r"bad device 'tpu:0'"):
        convnet.Net(with_cost(base(), "data"), devices="tpu:0")


def test_cuda_device_that_does_not_exist():
    if convnet.cuda_device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"cuda:0|CUDA backend"):
        convnet.Net(with_cost(base(), "data"), devices="cuda:0")


@pytest.mark.parametrize("call", ["cuda_memory_stats", "cuda_reset_peak", "cuda_synchronize"])
def test_negative_cuda_device_index(call):
    with pytest.raises(ValueError, match=rf"{call}: device index -1 is negative"):
        getattr(convnet, call)(-1)


def test_cuda_graph_needs_one_gpu():
    with pytest.raises(ValueError, match=r"CUDA graphs need every layer on one GPU: layer 'data' is on cpu"):
        convnet.Net(with_cost(base(), "data"), cuda_graph=True)
    net = convnet.Net(with_cost(base(), "data"))
    with pytest.raises(ValueError, match=r"CUDA graphs need every layer on one GPU"):
        net.cuda_graph = True
    assert net.cuda_graph is False and net.cuda_graph_nodes == 0


def fc_net():
    m = base()
    m.fc("f", "data", outputs=3)
    return convnet.Net(with_cost(m, "f"))


def test_wrong_batch_shape():
    net = fc_net()
    with pytest.raises(ValueError, match=r"input 'data': expected a batch of shape \(3, 8, 8, 2\)"):
        net.forward(np.zeros((2, 3, 9, 8), np.float32), np.zeros(2, np.int64))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"input 'data': expected an NCHW array"):
        fc_net().forward(np.zeros((2, 3, 8), np.float32), np.zeros(2, np.int64))


def test_wrong_dtype():
    with pytest.raises(ValueError, match=r"input 'data': expected an array of real numbers .* got complex128"):
        fc_net().forward(np.zeros((2, 3, 8, 8), np.complex128), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"input 'data': expected an array of real numbers .* got bool"):
        fc_net().forward(np.zeros((2, 3, 8, 8), bool), np.zeros(2, np.int64))
    net = fc_net()
    name = net.param_names()[0]
    with pytest.raises(ValueError, match=rf"parameter '{name}': expected an array of real numbers .* got <U1"):
        net.set_param(name, np.full(net.get_param(name).shape, "a"))


def test_labels_must_be_integers_in_range():
    net = fc_net()
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"labels must be integers"):
        net.forward(x, np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"label 3 of case 1 is not a class index in \[0, 3\)"):
        net.forward(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be a 1-D array"):
        net.forward(x, np.zeros((2, 1), np.int64))


def test_batch_sizes_of_inputs_must_agree():
    net = fc_net()
    net.set_input("data", np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"input 'labels': expected a batch of shape"):
        net.set_input("labels", np.zeros(3, np.int64))


def test_set_param_checks_shape_and_dtype():
    net = fc_net()
    with pytest.raises(ValueError, match=r"parameter 'f.weights': expected shape \(3, 192\)"):
        net.set_param("f.weights", np.zeros((3, 191), np.float32))
    with pytest.raises(ValueError, match=r"no parameter named 'f.weight'"):
        net.get_param("f.weight")


def test_unknown_layer_name():
    with pytest.raises(ValueError, match=r"no layer named 'nope'"):
        fc_net().output("nope")


def test_malformed_model_json():
    with pytest.raises(ValueError, match=r"not valid JSON"):
        convnet.Net('{"layers": [')


def test_nan_in_the_batch_stops_the_step_before_the_update():
    net = fc_net()
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[1, 2, 3, 4] = np.nan
    before = net.get_param("f.weights")
    with pytest.raises(ValueError, match=r"input 'data' holds nan at \[1, 2, 3, 4\]"):
        net.train_step(x, np.array([0, 1]))
    np.testing.assert_array_equal(net.get_param("f.weights"), before)
    assert net.step == 0
