"""A Net built from a Model on one or more devices, trained on numpy batches (NCHW in, NCHW out)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _core
from .model import Model


def solver_options(solver: str | None = None, adam_betas: Sequence[float] | None = None,
                   adam_eps: float | None = None) -> "_core.SolverOptions":
    """The engine's SolverOptions; None takes its defaults (sgd; AdamW: betas (0.9, 0.999),
    eps 1e-8, defined in C++ alone). ValueError for an unknown solver (listing the known ones),
    betas outside [0, 1), or AdamW options given to another solver."""
    name = solver if solver is not None else _core.SolverOptions().name
    if name != "adamw" and (adam_betas is not None or adam_eps is not None):
        raise ValueError(f"adam_betas and adam_eps apply to solver 'adamw' only, not '{name}'")
    b1 = b2 = None
    if adam_betas is not None:
        betas = tuple(adam_betas)
        if len(betas) != 2:
            raise ValueError(f"adam_betas takes two numbers (beta1, beta2), got {adam_betas!r}")
        b1, b2 = float(betas[0]), float(betas[1])
    return _core.SolverOptions(name, b1, b2, None if adam_eps is None else float(adam_eps))


class Net:
    """The engine's network, with the training step as the AlexNet paper writes it.

    ``devices`` maps logical devices (a layer's ``device`` option) to physical ones: a string
    such as "cpu" for everything, or a list like ["cpu:0", "cpu:1"] or ["cuda:0", "cuda:1"]; a
    GPU listed again (["cuda:0", "cuda:0"]) runs each of its logical devices on a stream of its own.
    ``math`` is how cuBLAS computes on GPUs: "fp32" (strict) or "tf32" (tensor cores).
    ``cuda_graph`` replays each training step's forward and backward passes as one captured CUDA
    graph (a net on one GPU only); see the ``cuda_graph`` property.
    """

    def __init__(self, model: Model | str, devices: str | Sequence[str] = "cpu", seed: int = 1,
                 math: str = "fp32", cuda_graph: bool = False):
        text = model.to_json() if isinstance(model, Model) else str(model)
        # A string names the device of every logical device, as the commands' --device does.
        devices = [devices] if isinstance(devices, str) else list(devices)
        self._adopt(_core.Net(text, devices, seed, math))
        if cuda_graph:
            self.cuda_graph = True

    @classmethod
    def _of_core(cls, core_net) -> "Net":
        """A Net around an engine net built elsewhere (a convnet.Job's)."""
        net = cls.__new__(cls)
        net._adopt(core_net)
        return net

    def _adopt(self, core_net) -> None:
        self._net = core_net
        layers = self._net.layers()
        self.inputs = [l["name"] for l in layers if l["role"] == "input"]
        self.label_inputs = [l["name"] for l in layers if l["role"] == "labels"]
        self.cost_layers = [l["name"] for l in layers if l["role"] == "cost"]
        # Cost layers whose output is class probabilities (softmax_cost): predict reads the first.
        self.classifiers = [l["name"] for l in layers if l["classifies"]]

    # ---- one step ----
    def set_batch(self, x: np.ndarray, y: np.ndarray | None = None) -> None:
        """Feeds images (NCHW; float32, or any float or integer dtype and memory layout, converted)
        to the single input layer and labels to the labels layer."""
        if len(self.inputs) != 1:
            raise ValueError(f"set_batch needs a net with one input layer; this one has {self.inputs}: "
                             "use set_input(name, array)")
        self._net.set_input(self.inputs[0], x)
        if y is not None:
            if len(self.label_inputs) != 1:
                raise ValueError(f"set_batch needs one labels layer; this net has {self.label_inputs}")
            self._net.set_input(self.label_inputs[0], y)

    def set_input(self, name: str, array) -> None:
        """Feeds one input or labels layer: an NCHW array (labels: N class indices), or a
        ``convnet.Tensor`` in the engine's CHWN order (``convnet.from_dlpack`` of a PyTorch, NumPy
        or CuPy array, host or GPU memory), copied into the net's buffer with no host round trip."""
        if isinstance(array, _core.Tensor):
            self._net.set_input_tensor(name, array)
        else:
            self._net.set_input(name, array)

    def forward(self, x=None, y=None, train: bool = True) -> dict:
        """Runs the forward pass; returns the objective and per-cost-layer cost, top-1 and top-5 error
        (NaN for a cost that is not finite). In test mode (train=False) a cost that is not finite
        raises convnet._core.NonFiniteError (a FloatingPointError) naming the first layer whose
        output is not: NaN scores have no error rate."""
        if x is not None:
            self.set_batch(x, y)
        return self._net.forward(train)

    def backward(self, grads: dict | None = None, input_grads: Sequence[str] = ()) -> None:
        """Gradients of the last forward pass's objective with respect to every parameter
        (``get_grad``). With ``grads`` ({layer: dy}, each dy of the layer's output shape, NCHW, or
        N x C for a layer whose output is C x 1 x 1), the gradients of sum <dy, output> instead, as
        PyTorch's ``y.backward(dy)``: the cost layers add nothing. ``input_grads`` names input
        layers whose gradient to compute as well (``input_grad``)."""
        input_grads = [input_grads] if isinstance(input_grads, str) else list(input_grads)
        for name in input_grads:
            if name not in self.inputs:
                raise ValueError(f"input_grads: '{name}' is not an input layer of this net ({self.inputs})")
        for name in self.inputs:
            self._net.set_input_grad(name, name in input_grads)
        if grads is None:
            self._net.backward()
            return
        seeds = {}
        for name, dy in grads.items():
            given = np.asarray(dy)
            want = (self._net.batch_size,) + tuple(self.output_shape(name))
            dy = given.reshape(given.shape + (1, 1)) if given.ndim == 2 and want[2:] == (1, 1) else given
            if dy.shape != want:
                raise ValueError(f"backward: the gradient for layer '{name}' has shape {given.shape}, its "
                                 f"output {want} (NCHW{', or N x C' if want[2:] == (1, 1) else ''})")
            seeds[name] = dy
        self._net.backward_from(seeds)

    def input_grad(self, name: str) -> np.ndarray:
        """The gradient with respect to input layer `name` (NCHW, like the batch) from the last
        ``backward(..., input_grads=[name])``."""
        return self._net.input_grad(name)

    def forward_backward(self, x=None, y=None) -> dict:
        """forward(train=True) then backward(); returns forward's statistics. With cuda_graph on,
        both passes run as one CUDA graph launch."""
        if x is not None:
            self.set_batch(x, y)
        return self._net.forward_backward()

    @property
    def cuda_graph(self) -> bool:
        """Whether training steps replay a captured CUDA graph: the first step after switching it
        on (or after a new batch size) runs eagerly, the next one captures forward and backward,
        and every step after that is a single launch. Needs every layer on one GPU."""
        return self._net.cuda_graph

    @cuda_graph.setter
    def cuda_graph(self, on: bool) -> None:
        self._net.cuda_graph = bool(on)

    @property
    def fusion(self) -> bool:
        """Whether an LRN layer read only by a pool layer goes back through both in one pass (on
        by default; the same numbers either way). ``fused_layers()`` names those LRN layers."""
        return self._net.fusion

    @fusion.setter
    def fusion(self, on: bool) -> None:
        self._net.fusion = bool(on)

    def fused_layers(self) -> list[str]:
        return self._net.fused_layers()

    @property
    def cuda_graph_nodes(self) -> int:
        """Kernels, copies and GEMMs in the captured graph (0 while none is captured)."""
        return self._net.cuda_graph_nodes

    def update(self, lr_scale: float = 1.0) -> None:
        """One solver step on the gradients of the last backward; ValueError unless lr_scale is a
        finite number >= 0."""
        self._net.update(lr_scale)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float = 1.0) -> dict:
        """forward (training mode), backward, the solver's update; returns forward's statistics.

        Checked before any parameter changes, so that a refused step leaves the net as it was:
        ValueError for an ``lr_scale`` that is not a finite number >= 0, and for a batch holding
        NaN or Inf (naming the first such element, NCHW); convnet.DivergenceError (a
        FloatingPointError) when the cost or any parameter's gradient is not finite (diverged
        training; the gradients of that step stay in ``get_grad`` for inspection)."""
        self.set_batch(x, y)
        return self._net.train_step(lr_scale)

    def train_batch(self, batch, lr_scale: float = 1.0) -> dict:
        """A training step on a pipeline Batch (convnet.data.Pipeline), fed without conversion;
        checked as ``train_step``."""
        if len(self.inputs) != 1 or len(self.label_inputs) != 1:
            raise ValueError("train_batch needs a net with one input and one labels layer")
        self._net.set_batch(batch, self.inputs[0], self.label_inputs[0])
        return self._net.train_step(lr_scale)

    def predict(self, x: np.ndarray, output: str | None = None) -> np.ndarray:
        """Class probabilities (N x K) from the first classifying cost layer (or any layer's
        output, NCHW). A forward pass whose cost is not finite (NaN weights or images) raises
        FloatingPointError naming the first layer whose output is not."""
        self._net.set_input(self.inputs[0], x)
        for name in self.label_inputs:  # labels are not needed to predict: feed placeholders
            self._net.set_input(name, np.zeros(len(x), dtype=np.int64))
        self._net.forward(False)
        if output is None and not self.classifiers:
            raise ValueError("predict: the net has no cost layer that classifies (such as softmax_cost); "
                             "name a layer with output=")
        name = output or self.classifiers[0]
        out = self._net.output(name)
        return out.reshape(out.shape[0], -1) if output is None else out

    def top_k(self, x: np.ndarray, k: int = 5, class_names: Sequence[str] | None = None) -> list[list[tuple]]:
        """For each image, its k most probable classes as (class, probability), best first;
        class names instead of indices when given. ValueError unless 1 <= k <= the classes."""
        probs = self.predict(x)
        classes = probs.shape[1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= classes:
            raise ValueError(f"top_k: k must be an integer in [1, {classes}] (the net's classes), got {k!r}")
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        name = (lambda c: class_names[c]) if class_names else int
        return [[(name(c), float(p[c])) for c in row] for p, row in zip(probs, order)]

    # ---- checkpoints ----
    def save_checkpoint(self, path: str, state: dict | None = None) -> None:
        """Parameters and the solver's state (momentum; AdamW's moments) in safetensors, with
        the model definition, the solver and `state` as metadata; written atomically (temporary
        file, fsync, rename)."""
        _core.save_checkpoint(self._net, path, state)

    def load_checkpoint(self, path: str) -> dict:
        """Loads parameters, solver state, step and seed; returns the stored state. A checkpoint of
        a different model, or of another solver, fails with a ValueError naming the mismatch."""
        return _core.load_checkpoint(self._net, path)

    # ---- the solver and the gradient buckets ----
    def set_solver(self, solver: str | None = None, *, adam_betas: Sequence[float] | None = None,
                   adam_eps: float | None = None) -> None:
        """The rule update() applies: "sgd" (the paper's, the default), "nesterov" or "adamw"
        (with adam_betas, adam_eps). Another solver starts with zero state."""
        self._net.set_solver(solver_options(solver, adam_betas, adam_eps))

    @property
    def solver(self) -> dict:
        """The solver's name, hyperparameters and update counter."""
        o = self._net.solver
        return dict(name=o.name, beta1=o.beta1, beta2=o.beta2, eps=o.eps, step=self._net.solver_step)

    def get_solver_state(self, name: str, state: str) -> np.ndarray:
        """A parameter's solver state tensor ("velocity"; AdamW: "m", "v"), in its shape."""
        return self._net.get_state(name, state)

    def gradient_buckets(self) -> list[dict]:
        """Per flat gradient bucket: device, parameter names, their offsets, a copy of `flat`."""
        return self._net.gradient_buckets()

    @classmethod
    def from_checkpoint(cls, path: str, devices: str | Sequence[str] = "cpu", math: str = "fp32") -> "Net":
        """The net a checkpoint was made from (its stored model definition), with its weights."""
        meta = _core.read_checkpoint_meta(path)
        net = cls(meta["model"], devices=devices, seed=meta["seed"], math=math)
        net._net.set_solver(meta["solver"])
        net.checkpoint_state = net.load_checkpoint(path)
        return net

    # ---- inspection ----
    def output_tensor(self, name: str) -> "_core.Tensor":
        """The layer's output itself, CHWN, with no copy (``torch.from_dlpack`` or
        ``numpy.from_dlpack`` view it in place): the next forward pass overwrites it."""
        return self._net.output_tensor(name)

    def output(self, name: str) -> np.ndarray:
        return self._net.output(name)

    def output_shape(self, name: str) -> tuple:
        return self._net.output_shape(name)

    def layers(self) -> list[dict]:
        return self._net.layers()

    def memory_use(self) -> list[dict]:
        """The memory the net holds, block by block (each counted once): dicts of ``kind``
        (parameters, parameter gradients, solver state, activations, activation gradients, layer
        buffers, device copies, workspace), ``layer`` ("" for the net's own), ``what``, ``device``
        and ``bytes``. Buffers appear once the first step has allocated them."""
        return self._net.memory_use()

    @property
    def parameter_count(self) -> int:
        return self._net.parameter_count

    @property
    def math(self) -> str:
        """The GEMM math mode this net uses on GPUs: "fp32" or "tf32"."""
        return self._net.math

    @property
    def step(self) -> int:
        return self._net.step

    # ---- parameters ----
    def param_names(self) -> list[str]:
        return self._net.param_names()

    def get_param(self, name: str) -> np.ndarray:
        return self._net.get_param(name)

    def get_grad(self, name: str) -> np.ndarray:
        return self._net.get_grad(name)

    def set_param(self, name: str, value: np.ndarray) -> None:
        """Copies `value` (any float or integer dtype, any memory layout: converted to float32)
        into the parameter."""
        self._net.set_param(name, np.asarray(value))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {n: self.get_param(n) for n in self.param_names()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for n, v in state.items():
            self.set_param(n, v)

    def hyperparams(self, name: str) -> dict:
        return self._net.hyperparams(name)

    def set_hyperparams(self, name: str, lr=None, momentum=None, weight_decay=None) -> None:
        self._net.set_hyperparams(name, lr=lr, momentum=momentum, weight_decay=weight_decay)


def check_gradients(net: Net, x: np.ndarray, y: np.ndarray, step: float = 1e-3, samples: int = 16,
                    tolerance: float = 2e-2, seed: int = 7, verbose: bool = False) -> list[dict]:
    """cuda-convnet's check-grads mode: every parameter's backprop gradient against central
    finite differences of the objective on batch (x, y). Returns one dict per parameter with
    ``relative_error`` (||analytic - numeric|| / ||analytic|| over the sampled elements),
    ``max_element_error`` and ``ok``; parameters are left unchanged."""
    net.set_batch(x, y)
    results = _core.check_gradients(net._net, step, samples, tolerance, seed)
    if verbose:
        for r in results:
            print(f"{r['param']:>24}  checked {r['checked']:3d}  rel err {r['relative_error']:.2e}  "
                  f"worst element {r['max_element_error']:.2e}  "
                  f"{'ok' if r['ok'] else 'FAIL'}")
    return results
