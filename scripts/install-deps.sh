#!/usr/bin/env bash
# Installs what convnet needs to build, test and train on a fresh Debian machine (run as root, or
# with sudo available). Idempotent: skips what is already there. `--test` adds what only the tests
# need: qemu-user, which runs the portable module on emulated CPUs without AVX / AVX-512
# (tests/python/test_portable.py), clang and LLVM's OpenMP runtime with Archer (libomp-dev) for
# the fuzz targets (scripts/fuzz.sh) and the ThreadSanitizer run (scripts/test.sh), and onnx + onnxruntime (tests/python/test_onnx_export.py).
set -euo pipefail

APT_PACKAGES=(g++ cmake ninja-build libopenblas-dev nlohmann-json3-dev libgtest-dev zlib1g-dev
              libjpeg62-turbo-dev libpng-dev dataset-fashion-mnist python3-dev
              openmpi-bin libopenmpi-dev   # MPI: data parallelism across processes and hosts
              libdlpack-dev)               # DLPack: tensors shared with PyTorch, NumPy, CuPy
[ "${1:-}" = "--test" ] && APT_PACKAGES+=(qemu-user clang libomp-dev)  # clang: libFuzzer, TSan
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[install-deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
# safetensors: the reference reader, for the test that our checkpoints are standard files, and
# convnet.torchvision_weights (torchvision state_dicts in and out).
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore numpy pytest \
  pybind11 "scikit-build-core>=0.8" nlohmann-json scipy-openblas32 pillow \
  matplotlib tqdm safetensors
# onnx and onnxruntime: build and run the exported ONNX models in the export's tests.
if [ "${1:-}" = "--test" ]; then
  "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore onnx onnxruntime
fi
