"""A convnet net inside a PyTorch autograd graph: ``convnet.torch.Module``.

    import torch, convnet, convnet.torch
    body = convnet.torch.Module(convnet.Net(model), output="fc7")   # any layer's output
    head = torch.nn.Linear(4096, 10)
    loss = torch.nn.functional.cross_entropy(head(body(x)), y)      # x: N x C x H x W
    loss.backward()                                                 # through convnet too
    torch.optim.SGD(list(body.parameters()) + list(head.parameters()), lr=0.01).step()

The module's parameters are the net's own weights, shared with PyTorch through DLPack (no
copy): a PyTorch optimizer updates them in place. Forward runs the convnet net and returns the
chosen layer's output (N x C x H x W, or N x C for a C x 1 x 1 output such as an fc layer's);
backward starts convnet's backward from the gradient PyTorch gives for it
(``Net.backward(grads=...)``) and hands back the gradients of the weights and of the input.
convnet keeps the activations of one forward pass: backward must come before the next forward.
Needs PyTorch, which convnet itself never does, and a build with DLPack
(``convnet.dlpack_compiled()``).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _core
from .net import Net


def _from_convnet(t: _core.Tensor) -> torch.Tensor:
    return torch.from_dlpack(t)


class _Through(torch.autograd.Function):
    """Forward and backward of the wrapped net; the weights come in as inputs so that autograd
    gives them gradients."""

    @staticmethod
    def forward(ctx, module: "Module", x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        ctx.module = module
        ctx.pass_id = module._begin_forward(x)
        ctx.input_needs_grad = x.requires_grad
        return module._output()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        module = ctx.module
        grad_x = module._backward(grad_out, ctx.pass_id, ctx.input_needs_grad)
        return (None, grad_x) + tuple(module._weight_grads())


class Module(torch.nn.Module):
    """A convnet ``Net`` as a ``torch.nn.Module`` whose forward returns layer ``output``'s
    activations for the batch given to input layer ``input`` (the net's only one by default).
    Labels layers get placeholder labels: cost layers run but add nothing to the gradients."""

    def __init__(self, net: Net, output: str, input: str | None = None):
        super().__init__()
        if not _core.dlpack_compiled():
            raise RuntimeError("convnet.torch.Module shares the net's weights with PyTorch through DLPack, "
                               "which this build of convnet lacks (install libdlpack-dev and rebuild)")
        if input is None:
            if len(net.inputs) != 1:
                raise ValueError(f"the net has inputs {net.inputs}: name the one to feed with input=")
            input = net.inputs[0]
        if input not in net.inputs:
            raise ValueError(f"'{input}' is not an input layer of the net ({net.inputs})")
        net.output_shape(output)  # names an unknown layer
        self.net, self.input, self.output = net, input, output
        self._names = net.param_names()
        for i, name in enumerate(self._names):  # the net's memory, seen by PyTorch
            self.register_parameter(f"p{i}", torch.nn.Parameter(_from_convnet(net._net.param_tensor(name))))
        self._passes = 0

    def named_convnet_parameters(self):
        """(convnet name, parameter) pairs: conv1.weights, conv1.biases, ..."""
        return zip(self._names, self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Through.apply(self, x, *self.parameters())

    # ---- the passes, called by _Through ----
    def _begin_forward(self, x: torch.Tensor) -> int:
        if x.dim() != 4:
            raise ValueError(f"convnet.torch.Module takes an N x C x H x W batch, got shape {tuple(x.shape)}")
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # PyTorch's pending work (an optimizer step) first
        chwn = x.detach().to(torch.float32).permute(1, 2, 3, 0).contiguous()
        self.net.set_input(self.input, _core.from_dlpack(chwn))
        for name in self.net.label_inputs:
            self.net.set_input(name, np.zeros(x.shape[0], dtype=np.int64))
        self.net._net.forward(self.training)
        self._passes += 1
        return self._passes

    def _output(self) -> torch.Tensor:
        out = _from_convnet(self.net._net.output_tensor(self.output)).permute(3, 0, 1, 2)
        if out.shape[2:] == (1, 1):
            out = out.reshape(out.shape[0], out.shape[1])
        return out.clone()  # the net's buffer is overwritten by the next forward

    def _backward(self, grad_out: torch.Tensor, pass_id: int, input_needs_grad: bool):
        if pass_id != self._passes:
            raise RuntimeError("convnet keeps the activations of its last forward pass only: call backward "
                               "before running the module forward again")
        dy = grad_out.detach().to(torch.float32)
        if dy.dim() == 2:
            dy = dy.reshape(dy.shape + (1, 1))
        self.net.backward(grads={self.output: dy.cpu().numpy()}, input_grads=[self.input] if input_needs_grad else [])
        if not input_needs_grad:
            return None
        g = _from_convnet(self.net._net.input_grad_tensor(self.input)).permute(3, 0, 1, 2)
        return g.clone().to(grad_out.device)

    def _weight_grads(self):
        return [_from_convnet(self.net._net.grad_tensor(name)).clone() for name in self._names]
