"""The portable build (CONVNET_MARCH=portable, what `pip install .` and `pip wheel .` build; see
cmake/ConvnetMarch.cmake) runs on any x86-64 CPU: its code targets the x86-64 baseline, and only
the clones of the hot loops that are chosen at load time (cpp/src/cpu/simd_dispatch.h) use
AVX2 / AVX-512. These tests skip for a native build (plain CMake, convnet.march() == "native")."""

import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import convnet

pytestmark = pytest.mark.skipif(
    convnet.march() != "portable" or platform.machine() != "x86_64",
    reason=f"not a portable x86-64 build (march {convnet.march()!r}, {platform.machine()})")

# Clone suffixes GCC gives the dispatched versions (target_clones "arch=x86-64-v3" / "-v4").
CLONES = ("[clone .arch_x86_64_v3]", "[clone .arch_x86_64_v4]")


def is_clone(name):
    """A dispatched clone, or the cold part GCC splits off one (its error paths: reached only
    from the clone, so as safe as it)."""
    return name.removesuffix(" [clone .cold]").endswith(CLONES)

# Instructions beyond the x86-64 baseline (SSE2): every VEX/EVEX one (AVX, AVX2, FMA, AVX-512: their
# AT&T mnemonics start with v), AVX-512 mask registers, BMI/LZCNT/MOVBE/POPCNT/CRC32 (x86-64-v2,
# -v3) and the SSE3/SSSE3/SSE4 instructions GCC emits (x86-64-v2). Not tzcnt: GCC emits `rep bsf`
# for baseline code, which objdump shows as tzcnt and which older CPUs run as bsf.
BEYOND_BASELINE = re.compile(
    r"^(v(?!err|erw)[a-z0-9]+"
    r"|k(mov|and|andn|or|xor|xnor|not|ortest|test|shiftl|shiftr|unpck|add)[bwdq]?[bwdq]"
    r"|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|movbe"
    r"|popcnt|crc32[bwlq]?"
    r"|addsubp[sd]|h(add|sub)p[sd]|lddqu|movddup|movs[hl]dup"
    r"|pshufb|palignr|pabs[bwd]|ph(add|sub)(w|d|sw)|pmaddubsw|pmulhrsw|psign[bwd]"
    r"|blendv?p[sd]|pblendw|pblendvb|dpp[sd]|extractps|insertps|pextr[bdq]|pinsr[bdq]"
    r"|pm(ax|in)(sb|sd|ud|uw)|pmuldq|pmulld|pmov[sz]x[bwd][wdq]|ptest|round[ps][sd]"
    r"|packusdw|pcmp(eq|gt)q|phminposuw|mpsadbw|movntdqa|pcmp[ei]stri|pcmp[ei]strm)$")
PREFIXES = {"lock", "rep", "repz", "repe", "repnz", "repne", "data16", "notrack", "bnd", "cs", "ds",
            "es", "fs", "gs", "ss", "addr32", "rex", "rex.W"}

# The hot loops that must be dispatched: the parallel body (OpenMP outlines it into a function of
# its own, `._omp_fn.N`) must itself have AVX2 and AVX-512 clones that use vector registers.
HOT = ["cpu::im2col(", "cpu::col2im(", "cpu::lrn_forward(", "cpu::lrn_backward(",
       "cpu::pool_forward(", "cpu::pool_backward(", "bias_neuron_loop<convnet::cpu::(anonymous "
       "namespace)::Relu>", "backward_loop<convnet::cpu::(anonymous namespace)::Relu>",
       "cpu::bias_backward(", "cpu::dropout_apply(", "cpu::sgd_update(", "cpu::axpby("]


def disassembly(path):
    """{function name: [(mnemonic, operands), ...]} of the module's code, names demangled."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    text = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", path], check=True,
                          capture_output=True, text=True).stdout
    funcs, current = {}, None
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    for line in text.splitlines():
        m = header.match(line)
        if m:
            current = funcs.setdefault(m.group(1), [])
        elif current is not None and ":\t" in line:
            words = line.split(":\t", 1)[1].split()
            while words and words[0] in PREFIXES:
                words = words[1:]
            if words:
                current.append((words[0], " ".join(words[1:])))
    return funcs


def test_only_the_dispatched_clones_use_instructions_beyond_x86_64():
    funcs = disassembly(convnet._core.__file__)
    assert any(is_clone(name) for name in funcs), \
        "no clone symbols: the module was stripped (pyproject.toml: install.strip = false)"
    offenders = {name: insn for name, code in funcs.items() if not is_clone(name)
                 for insn in code if BEYOND_BASELINE.match(insn[0])}
    assert not offenders, ("functions that are not run-time dispatched clones use instructions "
                           f"beyond x86-64 (a SIGILL on an older CPU): {list(offenders.items())[:10]}")
    for hot in HOT:
        for clone, registers in ((CLONES[0], ("%ymm",)), (CLONES[1], ("%ymm", "%zmm"))):
            bodies = [name for name in funcs
                      if hot in name and "._omp_fn." in name and name.endswith(clone)]
            assert bodies, f"no {clone} clone of the parallel loop of {hot}"
            assert any(r in ops for name in bodies for _, ops in funcs[name] for r in registers), \
                f"the {clone} clones of {hot}'s parallel loop use no {registers} registers"


def test_the_module_carries_its_own_cpp_runtime_hidden():
    """A pip build links libstdc++ statically and exports none of it (CMakeLists.txt, CONVNET_WHEEL).
    Built with a GCC that links part of libstdc++ statically and the rest from the system's newer
    libstdc++.so (devtoolset style; an H200 machine's image, 2026-12-04), the module held two copies
    of the locale machinery: formatting a number into an error message, or compiling a std::regex,
    crashed Python. One private copy cannot meet another."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    path = convnet._core.__file__
    headers = subprocess.run([objdump, "-p", path], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"^\s*NEEDED\s+(\S+)", headers, re.M)
    assert needed and not [n for n in needed if n.startswith("libstdc++")], needed
    symbols = subprocess.run([objdump, "-T", "-C", path], check=True, capture_output=True, text=True).stdout
    exported = [line for line in symbols.splitlines() if ".text" in line or ".data" in line or ".bss" in line]
    runtime = [line for line in exported if "std::locale" in line or "std::ctype" in line
               or "std::ios_base" in line or "__cxa_throw" in line]
    assert not runtime, f"the module exports parts of the C++ runtime: {runtime[:5]}"


# A small net through every dispatched loop: convolutions with stride 1 and 2 (im2col, col2im),
# biases, relu/tanh/logistic, LRN, max and average pooling, dropout, fc, softmax, SGD. Two training
# steps; the parameters, the last forward's outputs and the gradients are saved.
STEP_SCRIPT = r"""
import sys, numpy as np, convnet
m = convnet.Model()
x = m.input("data", channels=3, size=16); y = m.labels("labels")
h = m.conv("conv1", x, filters=8, size=3, padding=1, neuron="relu", init="kaiming")
h = m.pool("pool1", m.lrn("rnorm1", h), size=3, stride=2)
h = m.conv("conv2", h, filters=16, size=3, stride=2, neuron="tanh", init="kaiming")
h = m.pool("pool2", h, pool="avg", size=2, stride=1)
h = m.dropout("drop", m.fc("fc1", h, outputs=64, neuron="logistic", init="xavier"), rate=0.5)
m.softmax_cost("cost", m.fc("fc2", h, outputs=10, init="xavier"), y)
net = convnet.Net(m, devices="cpu", seed=3)
rng = np.random.default_rng(0)
xb = rng.standard_normal((32, 3, 16, 16), dtype=np.float32)
yb = rng.integers(0, 10, 32).astype(np.float32)
for _ in range(2):
    net.train_step(xb, yb)
out = {"p_" + n: net.get_param(n) for n in net.param_names()}
out.update({"g_" + n: net.get_grad(n) for n in net.param_names()})
out.update({"o_" + l: net.output(l) for l in ("conv1", "rnorm1", "pool1", "conv2", "pool2", "drop", "fc2")})
np.savez(sys.argv[1], **out)
"""


def test_every_clone_gives_the_same_numbers(tmp_path):
    """The same steps on this CPU (its best clones), and under qemu-user on an emulated CPU without
    AVX (Nehalem: the baseline clones) and one with AVX2 but no AVX-512 (Haswell: the x86-64-v3
    clones). GCC's resolvers read cpuid, which qemu emulates; glibc's GLIBC_TUNABLES hwcaps masks
    do not reach them, so an emulator is the way to run the other clones. OpenBLAS is held to one
    kernel set in all three runs, so only convnet's loops differ. The clones may differ in the last
    bits (FMA contraction, vector widths in sums), not more. The baseline run also shows the
    module runs, start to end, on a CPU without AVX."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-user is not installed (apt-get install qemu-user): the clones for other "
                    "CPUs cannot be run here")
    script = tmp_path / "steps.py"
    script.write_text(STEP_SCRIPT)
    env = dict(os.environ, OPENBLAS_CORETYPE="Nehalem")
    runs = {"this CPU": [], "Nehalem": [qemu, "-cpu", "Nehalem"], "Haswell": [qemu, "-cpu", "Haswell"]}
    results = {}
    for cpu, prefix in runs.items():
        out = tmp_path / f"{cpu.replace(' ', '_')}.npz"
        r = subprocess.run(prefix + [sys.executable, str(script), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cpu}: exit {r.returncode}\n{r.stderr[-3000:]}"
        results[cpu] = dict(np.load(out))
    ref = results["this CPU"]
    for cpu in ("Nehalem", "Haswell"):
        assert results[cpu].keys() == ref.keys()
        for key, value in ref.items():
            np.testing.assert_allclose(results[cpu][key], value, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{key}: {cpu} clones against this CPU's")
