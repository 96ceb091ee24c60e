"""bench/cpu_alexnet.py, the CPU benchmark of issue 17, on a tiny problem (convnet only where torch
is not installed): it runs every part (GEMM peak, interleaved steps, per-layer profile, the
fresh-process memory runs) and its FLOP count is the one the layer shapes give by hand."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import convnet

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "cpu_alexnet.py")


def vgg_a_flop(size: int, batch: int) -> float:
    """VGG-A's multiply-adds (x2) per training step, from its configuration: forward, then backward
    twice forward except conv1_1's (its input needs no gradient)."""
    total, channels, side, first = 0.0, 3, size, True
    for block in convnet.zoo.VGG_CONFIGS["A"]:
        for filters, k in block:
            fwd = 2.0 * batch * side * side * channels * filters * k * k
            total += fwd * (2 if first else 3)
            channels, first = filters, False
        side //= 2
    for n_in, n_out in ((512 * side * side, 4096), (4096, 4096), (4096, 1000)):
        total += 3 * 2.0 * batch * n_in * n_out
    return total


def test_cpu_benchmark_runs_every_part_and_counts_the_flop(tmp_path):
    out = tmp_path / "cpu.json"
    env = dict(os.environ, CONVNET_BENCH_GEMM_N="256")
    proc = subprocess.run([sys.executable, BENCH, "--nets", "vgg_a", "--size", "32", "--batch", "2",
                           "--steps", "1", "--warmup", "1", "--variants", "eager", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert report["flop_per_step"]["vgg_a"] == vgg_a_flop(32, 2)
    assert report["gemm_peak"]["peak_gflops"] > 0 and report["bandwidth"]["gbps"] > 0
    (c,) = [r for r in report["results"] if r["framework"] == "convnet"]
    assert c["net"] == "vgg_a" and c["batch"] == 2 and c["ms_per_step"] > 0
    rows = {r["layer"]: r for r in report["profiles"]["vgg_a"]}
    assert rows["conv1_1"]["forward_ms"] > 0 and rows["fc6"]["backward_ms"] > 0
    assert rows["conv1_1"]["backward_flop"] == rows["conv1_1"]["forward_flop"]  # no input gradient
    assert rows["conv2_1"]["backward_flop"] == 2 * rows["conv2_1"]["forward_flop"]
    # The ops inside the layers did the work the benchmark counts from the shapes.
    for layer in ("conv1_1", "conv2_1", "fc6"):
        for pass_name in ("forward", "backward"):
            ops = rows[layer][f"{pass_name}_ops"]
            assert ops["gemm"]["flop"] == pytest.approx(rows[layer][f"{pass_name}_flop"], rel=1e-9), (layer, pass_name)
            assert 0 < ops["gemm"]["ms"] <= rows[layer][f"{pass_name}_ms"] + 1e-6
    assert rows["conv1_1"]["forward_ops"]["im2col"]["bytes"] > 0 and "col2im" not in rows["conv1_1"]["backward_ops"]
    assert rows["conv2_1"]["backward_ops"]["col2im"]["calls"] >= 1
    assert "vgg_a: inside the GEMM layers" in proc.stdout
    mem = report["memory"]["vgg_a"]["convnet"]
    assert mem["peak_bytes"] > mem["baseline_bytes"] > 0
    kinds = {}
    for m in mem["memory_use"]:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + m["bytes"]
    params = convnet.Net(convnet.zoo.vgg("A", size=32), devices="cpu").parameter_count
    assert 4 * params <= kinds["parameters"] < 4 * params + 64 * 64  # each block rounded up to 64 bytes
    assert kinds["solver state"] == kinds["parameters"]
    assert sum(kinds.values()) <= mem["host"]["peak_bytes"]
    assert "| vgg_a | 2 |" in proc.stdout and "Largest blocks convnet holds" in proc.stdout


def test_host_memory_stats_and_memory_use_from_python():
    before = convnet.host_memory_stats()
    net = convnet.Net(convnet.zoo.small_convnet(classes=4, channels=1, size=16), devices="cpu")
    net.train_step(np.zeros((8, 1, 16, 16), np.float32), np.arange(8) % 4)
    use = net.memory_use()
    held = convnet.host_memory_stats()["current_bytes"] - before["current_bytes"]
    assert sum(m["bytes"] for m in use) == held
    assert {m["kind"] for m in use} >= {"parameters", "parameter gradients", "solver state", "activations",
                                        "activation gradients"}
    assert all(set(m) == {"kind", "layer", "what", "device", "bytes"} for m in use)
    del net
    assert convnet.host_memory_stats()["current_bytes"] == before["current_bytes"]
