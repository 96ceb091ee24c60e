"""convnet.torch.Module: a convnet net inside a PyTorch autograd graph (where torch is importable)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import convnet  # noqa: E402

pytestmark = pytest.mark.skipif(not convnet.dlpack_compiled(), reason="this build has no DLPack")


def model():
    m = convnet.Model()
    m.input("data", channels=2, size=6)
    m.labels("labels")
    m.conv("conv1", "data", filters=3, size=3, padding=1, neuron="tanh", initW=0.3, initB=0.1)
    m.pool("pool1", "conv1", size=2, stride=2, pool="avg")
    m.fc("fc2", "pool1", outputs=4, initW=0.2)
    m.softmax_cost("cost", "fc2", "labels")
    return m


def test_gradients_are_convnets_own(rng):
    """loss = sum(w * module(x)): PyTorch's gradients of the weights and of x are those convnet
    computes from the same dy, and the output is convnet's."""
    import convnet.torch as ct
    module = ct.Module(convnet.Net(model()), output="fc2")
    twin = convnet.Net(model())
    x = rng.normal(size=(5, 2, 6, 6)).astype(np.float32)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = module(xt)
    assert out.shape == (5, 4)
    (out * torch.from_numpy(w)).sum().backward()
    twin.set_batch(x, np.zeros(5, np.int64))
    twin.forward(train=True)
    np.testing.assert_array_equal(out.detach().numpy(), twin.output("fc2").reshape(5, 4))
    twin.backward(grads={"fc2": w}, input_grads=["data"])
    for name, p in module.named_convnet_parameters():
        np.testing.assert_allclose(p.grad.numpy(), twin.get_grad(name), rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(xt.grad.numpy(), twin.input_grad("data"), rtol=1e-6, atol=1e-7)


def test_a_pytorch_optimizer_trains_the_shared_weights(rng):
    """A PyTorch head on convnet's pool1, trained by torch.optim.SGD: the convnet weights change
    in place, by exactly -lr times their gradient, and the loss goes down."""
    import convnet.torch as ct
    net = convnet.Net(model())
    body = ct.Module(net, output="pool1")
    head = torch.nn.Linear(3 * 3 * 3, 4)
    opt = torch.optim.SGD(list(body.parameters()) + list(head.parameters()), lr=0.1)
    x = torch.from_numpy(rng.normal(size=(16, 2, 6, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, 16))
    losses = []
    for step in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(body(x).flatten(1)), y)
        loss.backward()
        before = net.get_param("conv1.weights")
        grad = dict(body.named_convnet_parameters())["conv1.weights"].grad.numpy().copy()
        opt.step()
        np.testing.assert_allclose(net.get_param("conv1.weights"), before - 0.1 * grad, rtol=1e-6, atol=1e-7)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_backward_of_an_older_forward_is_refused(rng):
    import convnet.torch as ct
    module = ct.Module(convnet.Net(model()), output="fc2")
    x = torch.from_numpy(rng.normal(size=(3, 2, 6, 6)).astype(np.float32))
    first = module(x).sum()
    module(x)
    with pytest.raises(RuntimeError, match=r"activations of its last forward pass only"):
        first.backward()
    with pytest.raises(ValueError, match=r"no layer named 'nope'"):
        ct.Module(convnet.Net(model()), output="nope")
