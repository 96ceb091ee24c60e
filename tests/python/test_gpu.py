"""The CUDA backend against the CPU backend, on whole nets: same seed, same batches, same numbers.

Skipped as a whole where there is no GPU (or no CUDA build); run on a lent GPU machine by
scripts/gpu-check.sh.

Tolerances. GPU and CPU sum in different orders, so their float32 results differ by rounding
(about 1e-7 relative). In a net with tanh neurons and average pooling that difference stays at
rounding level through training: perturbing every weight by 1e-6 (relative) on the CPU moved the
parameters after 20 steps by 1.5e-6 (small_convnet) and 3.3e-6 (fashion_alexnet, two towers with
dropout). ReLU and max pooling have kinks: a pre-activation within rounding of 0, or two
pooling candidates within rounding of each other, go different ways on the two backends, and
the gradient of that unit jumps. On the CPU, a 1e-7 perturbation of AlexNet-2012's weights moved
conv1's gradient by 1.1e-2 after one step (batch 4), and a 1e-6 perturbation of small_convnet
(ReLU, max) moved its parameters by 1.3e-3 after 20 steps. So the tight checks (1e-4 relative
norm per parameter) run on the smooth variant of each net (the same layers, towers, LRN and
dropout, with tanh for ReLU and average for max pooling), and the nets as published get the
checks that kinks cannot upset: forward results tight, gradients and trajectories loosely.
"""

from __future__ import annotations

import copy
import gc
import math

import numpy as np
import pytest

import convnet


def _why_no_gpu() -> str:
    if not convnet.cuda_compiled():
        return ("no CUDA backend in this convnet build (nvcc was not found when it was built): "
                "the GPU tests need a CUDA build and a GPU")
    if convnet.cuda_device_count() == 0:
        return "no CUDA device visible (convnet.cuda_device_count() == 0): the GPU tests need a GPU"
    return ""


_NO_GPU = _why_no_gpu()
pytestmark = pytest.mark.skipif(bool(_NO_GPU), reason=_NO_GPU or "a GPU is present")

GPU = "cuda:0"


# --------------------------------------------------------------------------- helpers
def smooth(model: convnet.Model) -> convnet.Model:
    """The same net with no kinks: tanh for ReLU, average for max pooling."""
    m = copy.deepcopy(model)
    for layer in m.layers:
        if layer.get("neuron") == "relu":
            layer["neuron"] = "tanh"
        if layer["type"] == "pool":
            layer["pool"] = "avg"
    return m


def rel_err(got, want) -> float:
    """||got - want|| / ||want|| in float64 (the plain norm of the difference when want is 0)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shapes differ: {got.shape} vs {want.shape}"
    den = np.linalg.norm(want)
    num = np.linalg.norm(got - want)
    return float(num / den) if den > 0 else float(num)


def _fmt(errors: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in errors.items())


def assert_per_param_close(got: dict, want: dict, tol: float, what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: parameter names differ: {sorted(got)} vs {sorted(want)}"
    errors = {k: rel_err(got[k], want[k]) for k in want}
    bad = {k: e for k, e in errors.items() if not e < tol}  # `not <` so that NaN fails too
    assert not bad, f"{what}: relative norm error >= {tol:g} in {_fmt(bad)}\n(all: {_fmt(errors)})"


def gpu_net(model, devices=GPU, seed=1, math="fp32"):
    return convnet.Net(model, devices=devices, seed=seed, math=math)


def cpu_devices(devices):
    return "cpu" if isinstance(devices, str) else ["cpu"] * len(devices)


def train(net, problem, steps, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    costs = []
    for _ in range(steps):
        x, y = problem.batch(batch, rng)
        costs.append(net.train_step(x, y)["objective"])
    return costs


def alexnet_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 224, 224), dtype=np.float32)
    y = rng.integers(0, 1000, n).astype(np.int64)
    return x, y


def one_step(net, x, y):
    """forward (training mode), backward, update; returns what each left behind."""
    before = net.state_dict()
    stats = net.forward(x, y, train=True)
    probs = net.output("cost").reshape(len(x), -1)
    drop = {n: net.output(n) for n in ("drop6a", "drop6b", "drop7a", "drop7b")}
    net.backward()
    grads = {k: net.get_grad(k) for k in net.param_names()}
    net.update()
    after = net.state_dict()  # no cuda_synchronize: get_param must wait for the update itself
    delta = {k: after[k].astype(np.float64) - before[k] for k in after}
    return dict(stats=stats, probs=probs, drop=drop, grads=grads, delta=delta, after=after)


# --------------------------------------------------------------------------- training: GPU == CPU
@pytest.mark.parametrize("kind, tol, cost_tol", [
    ("smooth", 1e-4, 1e-5),     # tanh + average pooling: rounding stays rounding
    ("relu-max", 3e-2, 1e-2),   # the zoo's net: kinks may flip (see the module docstring)
])
def test_small_convnet_20_steps_gpu_matches_cpu(problem, kind, tol, cost_tol):
    model = convnet.zoo.small_convnet(classes=10, channels=1, size=16)
    if kind == "smooth":
        model = smooth(model)
    gpu = gpu_net(model, seed=3)
    cpu = convnet.Net(model, devices="cpu", seed=3)
    assert_per_param_close(gpu.state_dict(), cpu.state_dict(), 1e-6, "initial parameters (same seed)")
    gpu_costs = train(gpu, problem, 20)
    cpu_costs = train(cpu, problem, 20)
    assert gpu.step == cpu.step == 20
    for i, (g, c) in enumerate(zip(gpu_costs, cpu_costs)):
        assert abs(g - c) <= cost_tol * abs(c), f"step {i + 1}: cost {g} on the GPU, {c} on the CPU"
    assert_per_param_close(gpu.state_dict(), cpu.state_dict(), tol, f"{kind} small_convnet after 20 steps")
    assert_per_param_close({k: gpu.get_grad(k) for k in gpu.param_names()},
                           {k: cpu.get_grad(k) for k in cpu.param_names()},
                           tol * 10, f"{kind} small_convnet: last step's gradients")

    test_x, test_y = problem.batch(64, np.random.default_rng(99))
    p_gpu, p_cpu = gpu.predict(test_x), cpu.predict(test_x)
    assert p_gpu.shape == (64, 10)
    assert rel_err(p_gpu, p_cpu) < tol, "predicted probabilities differ"
    np.testing.assert_array_equal(gpu.output("data"), test_x)  # NCHW in, NCHW out, via the GPU


def test_two_tower_net_with_dropout_20_steps_gpu_matches_cpu(problem):
    """fashion_alexnet in its smooth variant: two towers on one card, LRN, joins, dropout
    (the GPU's dropout masks must be the CPU's: same seed, same step, same Philox stream)."""
    model = smooth(convnet.zoo.fashion_alexnet(classes=10, channels=1, size=16))
    gpu = gpu_net(model, devices=[GPU, GPU], seed=3)
    cpu = convnet.Net(model, devices=["cpu", "cpu"], seed=3)
    gpu_costs = train(gpu, problem, 20)
    cpu_costs = train(cpu, problem, 20)
    for i, (g, c) in enumerate(zip(gpu_costs, cpu_costs)):
        assert abs(g - c) <= 1e-5 * abs(c), (f"step {i + 1}: cost {g} on the GPU, {c} on the CPU "
                                             "(different dropout masks?)")
    assert_per_param_close(gpu.state_dict(), cpu.state_dict(), 1e-4, "fashion_alexnet (smooth) after 20 steps")


@pytest.mark.skipif(convnet.cuda_device_count() < 2, reason="needs two CUDA devices")
def test_two_towers_on_two_gpus_match_one_gpu(problem):
    model = smooth(convnet.zoo.fashion_alexnet(classes=10, channels=1, size=16))
    two = gpu_net(model, devices=["cuda:0", "cuda:1"], seed=3)
    one = gpu_net(model, devices=[GPU, GPU], seed=3)
    assert {l["device"] for l in two.layers()} == {"cuda:0", "cuda:1"}
    c2, c1 = train(two, problem, 10), train(one, problem, 10)
    np.testing.assert_allclose(c2, c1, rtol=1e-6)
    assert_per_param_close(two.state_dict(), one.state_dict(), 1e-6, "towers on cuda:0+cuda:1 vs both on cuda:0")


# --------------------------------------------------------------------------- the layer-level API
def test_given_output_gradients_and_the_input_gradient_gpu_match_cpu():
    """backward(grads=..., input_grads=...) on a GPU and on two lanes of it, against the CPU."""
    rng = np.random.default_rng(5)
    m = convnet.Model()
    m.input("data", channels=2, size=8)
    m.labels("labels")
    m.conv("conv1", "data", filters=4, size=3, padding=1, neuron="tanh", initW=0.3, initB=0.1, device=[0, 1])
    m.pool("pool1", "conv1", size=2, stride=2, pool="avg", device=[0, 1])
    m.fc("fc2", "pool1", outputs=5, initW=0.2)
    m.softmax_cost("cost", "fc2", "labels")
    x, y = rng.normal(size=(6, 2, 8, 8)).astype(np.float32), rng.integers(0, 5, 6)
    nets = {d if isinstance(d, str) else "two lanes": convnet.Net(m, devices=d)
            for d in ("cpu", "cuda:0", ["cuda:0", "cuda:0"])}
    d_pool = rng.normal(size=(6, 4, 4, 4)).astype(np.float32)
    d_fc = rng.normal(size=(6, 5)).astype(np.float32)
    for net in nets.values():
        net.forward(x, y)
        net.backward(grads={"pool1": d_pool, "fc2": d_fc}, input_grads=["data"])
    cpu = nets.pop("cpu")
    for where, net in nets.items():
        assert rel_err(net.input_grad("data"), cpu.input_grad("data")) < 1e-5, where
        for name in cpu.param_names():
            assert rel_err(net.get_grad(name), cpu.get_grad(name)) < 1e-5, (where, name)


@pytest.mark.skipif(not convnet.dlpack_compiled(), reason="this build has no DLPack")
def test_dlpack_in_gpu_memory():
    """A GPU output handed out through DLPack is CUDA memory of its device, and taken back in it
    is the same memory; fed to a net on the GPU it gives what the NumPy path gives."""
    rng = np.random.default_rng(6)
    m = convnet.Model()
    m.input("data", channels=2, size=6)
    m.conv("conv1", "data", filters=3, size=3, padding=1, neuron="tanh", initW=0.3)
    a, b = convnet.Net(m, devices="cuda:0"), convnet.Net(m, devices="cuda:0")
    x = rng.normal(size=(4, 2, 6, 6)).astype(np.float32)
    a.forward(x, train=False)
    t = a.output_tensor("conv1")
    assert t.device == "cuda:0" and tuple(t.__dlpack_device__()) == (2, 0)
    back = convnet.from_dlpack(t)  # convnet as producer and consumer: the stream handshake
    assert back.data_ptr == t.data_ptr and back.device == "cuda:0"
    np.testing.assert_array_equal(back.numpy().transpose(3, 0, 1, 2), a.output("conv1"))
    for fed in (convnet.from_dlpack(np.ascontiguousarray(x.transpose(1, 2, 3, 0))),  # host memory
                convnet.from_dlpack(a.output_tensor("data"))):  # a's input buffer, on the GPU
        b.set_input("data", fed)
        b.forward(train=False)
        np.testing.assert_array_equal(b.output("conv1"), a.output("conv1"))


# --------------------------------------------------------------------------- AlexNet-2012, one step
def test_alexnet_2012_step_gpu_matches_cpu_smooth():
    """Every layer of the paper's net (towers on one card, LRN, dropout, the joins) in one training
    step, batch 4, with tanh/average pooling: gradients, the step taken and the parameters after it
    within 1e-4 (relative norm) of the CPU's, per parameter."""
    model = smooth(convnet.zoo.alexnet_2012())
    x, y = alexnet_batch()
    g = one_step(gpu_net(model, devices=[GPU, GPU]), x, y)
    c = one_step(convnet.Net(model, devices=["cpu", "cpu"], seed=1), x, y)
    for name in g["drop"]:
        assert np.array_equal(g["drop"][name] == 0, c["drop"][name] == 0), \
            f"{name}: the GPU's dropout mask differs from the CPU's"
    assert abs(g["stats"]["objective"] - c["stats"]["objective"]) <= 1e-5 * abs(c["stats"]["objective"])
    assert rel_err(g["probs"], c["probs"]) < 1e-5
    assert_per_param_close(g["grads"], c["grads"], 1e-4, "AlexNet-2012 (smooth) gradients")
    assert_per_param_close(g["delta"], c["delta"], 1e-4, "AlexNet-2012 (smooth) step taken (w1 - w0)")
    assert_per_param_close(g["after"], c["after"], 1e-4, "AlexNet-2012 (smooth) parameters after the step")


def test_alexnet_2012_step_gpu_close_to_cpu():
    """The paper's net as published (ReLU, max pooling). The forward pass is immune to kinks (a
    flipped ReLU or max switch changes an output by no more than the rounding that flipped it),
    so it is held tight; gradients loosely, as a flip moves one unit's whole gradient."""
    model = convnet.zoo.alexnet_2012()
    x, y = alexnet_batch()
    g = one_step(gpu_net(model, devices=[GPU, GPU]), x, y)
    c = one_step(convnet.Net(model, devices=["cpu", "cpu"], seed=1), x, y)
    assert math.isfinite(g["stats"]["objective"])
    assert abs(g["stats"]["objective"] - c["stats"]["objective"]) <= 1e-5 * abs(c["stats"]["objective"])
    assert rel_err(g["probs"], c["probs"]) < 1e-4
    assert g["stats"]["costs"][0]["top5_error"] == c["stats"]["costs"][0]["top5_error"]
    assert_per_param_close(g["grads"], c["grads"], 5e-2, "AlexNet-2012 gradients (kinks allowed for)")


# --------------------------------------------------------------------------- precision modes
def test_tf32_mode_runs_and_is_close_to_fp32():
    model = convnet.zoo.alexnet_2012()
    x, y = alexnet_batch()
    fp32 = convnet.Net(model, devices=[GPU, GPU], seed=1)
    assert fp32.math == "fp32", "fp32 must be the default math mode"
    tf32 = gpu_net(model, devices=[GPU, GPU], math="tf32")
    assert tf32.math == "tf32"
    c32 = fp32.forward(x, y, train=False)["objective"]
    p32 = fp32.output("cost")
    ctf = tf32.forward(x, y, train=False)["objective"]
    ptf = tf32.output("cost")
    assert abs(ctf - c32) < 1e-2, f"cost {ctf} in tf32, {c32} in fp32"
    assert not np.array_equal(ptf, p32), ("tf32 gave results bit-identical to fp32: the math mode "
                                          "does not seem to reach cuBLAS")
    stats = tf32.train_step(x, y)
    assert math.isfinite(stats["objective"])
    assert all(np.isfinite(v).all() for v in tf32.state_dict().values())


def test_unknown_math_mode_is_an_error():
    with pytest.raises(ValueError, match=r"bf17"):
        gpu_net(convnet.zoo.small_convnet(), math="bf17")


# --------------------------------------------------------------------------- memory
def test_steady_state_training_step_makes_no_cuda_malloc(problem):
    net = gpu_net(convnet.zoo.fashion_alexnet(classes=10, channels=1, size=16), devices=[GPU, GPU])
    rng = np.random.default_rng(0)
    batches = [problem.batch(32, rng) for _ in range(6)]
    for x, y in batches[:2]:
        net.train_step(x, y)
    convnet.cuda_synchronize(0)
    after2 = convnet.cuda_memory_stats(0)
    for x, y in batches[2:]:
        net.train_step(x, y)
    convnet.cuda_synchronize(0)
    after6 = convnet.cuda_memory_stats(0)
    assert after2["cuda_malloc_calls"] > 0, f"the allocator counts no cudaMalloc at all: {after2}"
    assert after6["cuda_malloc_calls"] == after2["cuda_malloc_calls"], \
        f"steps 3..6 called cudaMalloc: after step 2 {after2}, after step 6 {after6}"
    assert after6["current_bytes"] == after2["current_bytes"], \
        f"live device memory changed over steps 3..6: after step 2 {after2}, after step 6 {after6}"


def test_device_memory_does_not_grow_over_many_epochs(tmp_path):
    """The soak of docs/RELIABILITY.md on the GPU: a training run with a test pass and a
    checkpoint every epoch; from the third epoch on, no cudaMalloc and the same live bytes at
    every epoch's end (CONVNET_SOAK_EPOCHS sets the length; 6 by default)."""
    import os
    epochs = int(os.environ.get("CONVNET_SOAK_EPOCHS", "6"))

    class Sampler(convnet.Callback):
        def __init__(self):
            self.stats = []

        def on_epoch(self, e):
            convnet.cuda_synchronize(0)
            self.stats.append(convnet.cuda_memory_stats(0))

    s = Sampler()
    data = "generated[count=128;classes=4;channels=1;size=16;seed=3]"
    model = convnet.zoo.small_convnet(classes=4, channels=1, size=16, lr=0.05)
    convnet.train(model, data, epochs=epochs, batch=32, devices=GPU, save_dir=str(tmp_path), keep=2,
                  workers=2, callbacks=[s], progress=False)
    assert len(s.stats) == epochs
    warm = s.stats[1]
    assert warm["cuda_malloc_calls"] > 0 and warm["current_bytes"] > 0, f"the allocator counts nothing: {warm}"
    for epoch, st in enumerate(s.stats[2:], start=3):
        assert st["cuda_malloc_calls"] == warm["cuda_malloc_calls"], \
            f"epoch {epoch} called cudaMalloc: after epoch 2 {warm}, after epoch {epoch} {st}"
        assert st["current_bytes"] == warm["current_bytes"], \
            f"live device memory changed by epoch {epoch}: after epoch 2 {warm}, after epoch {epoch} {st}"


def test_memory_stats_peak_and_release(problem):
    keys = {"current_bytes", "peak_bytes", "cached_bytes", "cuda_malloc_calls"}

    def cycle():
        net = gpu_net(convnet.zoo.small_convnet(classes=10, channels=1, size=16))
        net.train_step(*problem.batch(32, np.random.default_rng(0)))
        convnet.cuda_synchronize(0)
        held = convnet.cuda_memory_stats(0)
        del net
        gc.collect()
        return held

    cycle()  # first use: handles, streams, any lasting workspace
    gc.collect()
    convnet.cuda_synchronize(0)
    convnet.cuda_reset_peak(0)
    base = convnet.cuda_memory_stats(0)
    assert keys <= set(base), f"cuda_memory_stats lacks {keys - set(base)}"
    assert base["peak_bytes"] == base["current_bytes"], f"after cuda_reset_peak: {base}"
    held = cycle()
    assert held["current_bytes"] > base["current_bytes"]
    assert held["peak_bytes"] >= held["current_bytes"]
    end = convnet.cuda_memory_stats(0)
    assert end["current_bytes"] == base["current_bytes"], f"a freed net left memory held: {base} -> {end}"
    assert end["peak_bytes"] >= held["peak_bytes"]
    assert end["cached_bytes"] > 0, "freed blocks should stay cached for reuse"


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("devices", ["cuda:99", [GPU, "cuda:99"]])
def test_missing_device_is_a_runtime_error_naming_it(devices):
    model = convnet.zoo.fashion_alexnet(classes=10, channels=1, size=16)
    with pytest.raises(RuntimeError, match=r"cuda:99"):
        convnet.Net(model, devices=devices)


# --------------------------------------------------------------------------- CUDA graphs
def test_cuda_graph_steps_equal_eager_steps(problem):
    """fashion_alexnet (two towers on one card, LRN, dropout) trained 12 steps eagerly and from a
    captured graph: the same costs and parameters (dropout masks follow the step in replays)."""
    model = convnet.zoo.fashion_alexnet(classes=10, channels=1, size=16)
    eager = gpu_net(model, devices=GPU, seed=3)  # one lane: a graph captures one stream
    graph = convnet.Net(model, devices=GPU, seed=3, cuda_graph=True)
    eager_costs = train(eager, problem, 12)
    graph_costs = train(graph, problem, 12)
    assert graph.cuda_graph and graph.cuda_graph_nodes > 20
    for i, (g, e) in enumerate(zip(graph_costs, eager_costs)):
        assert abs(g - e) <= 1e-6 * abs(e), f"step {i + 1}: cost {g} replayed, {e} eager"
    assert_per_param_close(graph.state_dict(), eager.state_dict(), 1e-6, "after 12 steps")


def test_trainer_with_cuda_graph_equals_eager_trainer():
    """The trainer's loop with tests in between gives the eager run's results. 192 training and
    48 test images: whole batches of 24, so the graph captured in the first epoch is still there
    at the end (a partial batch re-plans the net and drops it)."""
    data = "generated[count=192;classes=4;channels=1;size=16;seed=5]"
    model = convnet.zoo.fashion_alexnet(classes=4, channels=1, size=16)
    runs = {}
    for graph in (False, True):
        net, result = convnet.train(model, data, epochs=2, batch=24, devices=GPU, test_every=4,
                                    cuda_graph=graph, progress=False)
        runs[graph] = (net, result)
    (eager, r_eager), (graph, r_graph) = runs[False], runs[True]
    assert graph.cuda_graph_nodes > 0
    assert abs(r_graph["test"]["cost"] - r_eager["test"]["cost"]) <= 1e-5 * abs(r_eager["test"]["cost"])
    assert_per_param_close(graph.state_dict(), eager.state_dict(), 1e-5, "after 2 epochs")


# --------------------------------------------------------------------------- the trainer
def test_trainer_on_the_gpu_learns_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    data = "generated[count=512;classes=4;channels=1;size=16;seed=5]"
    model = convnet.zoo.small_convnet(classes=4, channels=1, size=16, lr=0.05)
    net, result = convnet.train(model, data, epochs=3, batch=32, devices=GPU, save_dir=str(tmp_path),
                                progress=False)
    assert result["test"]["top1_error"] < 0.3, result
    cpu = convnet.Net.from_checkpoint(result["last_checkpoint"], devices="cpu")
    x = np.random.default_rng(3).normal(0, 1, (8, 1, 16, 16)).astype(np.float32)
    assert rel_err(cpu.predict(x), net.predict(x)) < 1e-4


# --------------------------------------------------------------------------- the benchmark
@pytest.mark.parametrize("net_name", ["onetower", "alexnet2012_lanes"])
def test_gpu_alexnet_benchmark_runs_and_reports(tmp_path, net_name):
    """bench/gpu_alexnet.py, the GPU session's main figures, on a tiny problem: it runs, records
    convnet's eager and graph steps (no graph for the towers on two lanes: a graph captures one)
    and the upload phase, and exits 0 (no error recorded)."""
    import json
    import os
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "gpu_alexnet.py")
    out = tmp_path / "alexnet.json"
    proc = subprocess.run([sys.executable, bench, "--nets", net_name, "--math", "fp32", "--batch", "2",
                           "--size", "64", "--warmup", "2", "--steps", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == [] and not report["partial"]
    (c,) = [r for r in report["results"] if r["framework"] == "convnet"]
    assert c["net"] == net_name and c["math"] == "fp32"
    assert math.isfinite(c["step_ms"]) and c["step_ms"] > 0
    if net_name == "onetower":
        assert c["graph_step_ms"] > 0 and c["graph_nodes"] > 10
    else:
        assert "graph_step_ms" not in c
    assert all(c["phases_ms"][p] >= 0 for p in ("input", "upload", "forward", "backward", "update"))
    assert math.isfinite(c["loss_last"])
    assert f"| {net_name} | fp32 | convnet |" in proc.stdout
