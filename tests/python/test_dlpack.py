"""DLPack: convnet tensors shared with NumPy (and PyTorch where it is importable) without copies."""

import numpy as np
import pytest

import convnet

pytestmark = pytest.mark.skipif(not convnet.dlpack_compiled(),
                                reason="this build has no DLPack (dlpack/dlpack.h was not found)")


def small_net():
    m = convnet.Model()
    m.input("data", channels=2, size=6)
    m.labels("labels")
    m.conv("conv1", "data", filters=3, size=3, padding=1, neuron="tanh", initW=0.3)
    m.fc("fc2", "conv1", outputs=4, initW=0.2)
    m.softmax_cost("cost", "fc2", "labels")
    return convnet.Net(m)


def test_an_output_is_viewed_in_place(rng):
    """numpy.from_dlpack of output_tensor is the net's own buffer: CHWN, and the next forward
    pass's values show through it."""
    net = small_net()
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    net.forward(x, rng.integers(0, 4, 5), train=False)
    t = net.output_tensor("conv1")
    assert t.shape == (3, 6, 6, 5) and t.device == "cpu:0"
    view = np.from_dlpack(t)
    assert view.ctypes.data == t.data_ptr
    np.testing.assert_array_equal(view.transpose(3, 0, 1, 2), net.output("conv1"))
    net.forward(-x, rng.integers(0, 4, 5), train=False)  # tanh is odd: conv1 without bias flips sign
    np.testing.assert_array_equal(view.transpose(3, 0, 1, 2), net.output("conv1"))
    del net  # the view keeps the memory alive
    assert np.isfinite(view).all()


def test_an_array_is_taken_in_place_and_fed(rng):
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    t = convnet.from_dlpack(chwn)
    assert t.data_ptr == chwn.ctypes.data and t.shape == chwn.shape
    chwn[0, 0, 0, 0] = 7.0  # the same memory
    assert t.numpy()[0, 0, 0, 0] == 7.0
    chwn[0, 0, 0, 0] = x[0, 0, 0, 0]
    a, b = small_net(), small_net()
    y = rng.integers(0, 4, 5)
    a.set_batch(x, y)
    b.set_input("data", t)
    b.set_input("labels", y)
    assert a.forward(train=False)["objective"] == b.forward(train=False)["objective"]
    np.testing.assert_array_equal(b.output("fc2"), a.output("fc2"))
    del chwn  # the tensor holds the array
    assert np.array_equal(t.numpy(), x.transpose(1, 2, 3, 0))


def test_what_a_view_cannot_do_is_named():
    with pytest.raises(ValueError, match=r"convnet takes float32 arrays"):
        convnet.from_dlpack(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"not contiguous"):
        convnet.from_dlpack(np.zeros((4, 3), np.float32).T)
    with pytest.raises(ValueError, match=r"has no __dlpack__"):
        convnet.from_dlpack([1.0, 2.0])


def test_pytorch_shares_memory_both_ways(rng):
    torch = pytest.importorskip("torch")
    net = small_net()
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    net.forward(x, rng.integers(0, 4, 5), train=False)
    out = torch.from_dlpack(net.output_tensor("fc2"))  # (4, 1, 1, 5), CHWN
    assert out.data_ptr() == net.output_tensor("fc2").data_ptr
    np.testing.assert_array_equal(out.permute(3, 0, 1, 2).numpy(), net.output("fc2"))
    chwn = torch.from_numpy(x).permute(1, 2, 3, 0).contiguous()
    t = convnet.from_dlpack(chwn)
    assert t.data_ptr == chwn.data_ptr()
    other = small_net()
    other.set_input("data", t)
    other.set_input("labels", rng.integers(0, 4, 5))
    other.forward(train=False)
    np.testing.assert_array_equal(other.output("conv1"), net.output("conv1"))
