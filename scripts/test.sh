#!/usr/bin/env bash
# Builds everything and runs every test: the C++ suites (CMake + ctest) and the Python suites
# (pip install . + pytest). GPU tests skip, saying so, where no GPU is present; then the CUDA
# backend is built once more against cuda_emu (tests/cuda_emu), which runs it on the host, and the
# GPU tests run there (C++ and Python); then every C++ test once more under AddressSanitizer and
# UndefinedBehaviorSanitizer, the threaded suites under ThreadSanitizer, and each fuzz target for
# a few seconds (scripts/fuzz.sh). A GPU machine runs the GPU tests for real: scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

echo "== C++: configure, build, ctest"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/ci -j "$JOBS"
ctest --test-dir build/ci --output-on-failure -j "$JOBS"

# pip builds the portable module (pyproject.toml: CONVNET_MARCH=portable), so the Python suite
# below, tests/python/test_portable.py included, tests a portable build; ctest above a native one.
echo "== Python: pip install . (portable) and pytest"
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-build-isolation .
# Run from tests/ so that `import convnet` finds the installed package, not the source tree.
cd tests && "$PYTHON" -m pytest -q python

echo "== CUDA backend under cuda_emu (the GPU tests, run on the host)"
cd ..
cmake -S . -B build/emu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCONVNET_CUDA=EMULATE \
  -DCONVNET_PYTHON=ON -DCONVNET_PYTHON_MODULE_DIR="$PWD/build/emu/python/convnet" \
  -Dpybind11_DIR="$("$PYTHON" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
rm -rf build/emu/python/convnet && mkdir -p build/emu/python && cp -r python/convnet build/emu/python/
rm -f build/emu/python/convnet/_core*.so
cmake --build build/emu -j "$JOBS" --target convnet_tests cuda_emu_tests kernel-bench convnet-train _core
ctest --test-dir build/emu --output-on-failure -j "$JOBS" -R 'Cuda'
# Threads (and blocks) in reverse order: a kernel or test that reads another thread's write
# without a barrier, or races between blocks, gets a different answer than in the run above.
CUDA_EMU_ORDER=reverse ctest --test-dir build/emu --output-on-failure -j "$JOBS" -R 'Cuda' \
  -E 'AlexNet|SteadyState|Tf32Mode|TwoTowers'
(cd tests && PYTHONPATH="$PWD/../build/emu/python" "$PYTHON" -m pytest -q python/test_gpu.py)

echo "== Every C++ test under AddressSanitizer + UndefinedBehaviorSanitizer (CPU and cuda_emu)"
# Reads past a tensor, use after release, signed overflow, misaligned or null pointers: each
# stops the test (-fno-sanitize-recover). The whole-AlexNet tests take minutes each under ASan
# (the plain runs above have them), and the tools (convnet-train, kernel-bench) are covered by
# the plain runs too. Built with clang at -O1 with line tables only ($SANITIZE_FLAGS): a third
# of g++'s -O2 -g compile time under the sanitizers, which is most of this stage.
# -Wno-pass-failed: at -O1 clang does not vectorise the `omp simd` loops and warns for each (66
# lines of a CI log); the plain builds are the ones that must vectorise.
SANITIZE_FLAGS="-O1 -gline-tables-only -fno-omit-frame-pointer -Wno-pass-failed"
CC=clang CXX=clang++ cmake -S . -B build/emu-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCONVNET_CUDA=EMULATE \
  -DCONVNET_TOOLS=OFF -DCMAKE_CXX_FLAGS_DEBUG="$SANITIZE_FLAGS" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build build/emu-asan -j "$JOBS" --target convnet_tests cuda_emu_tests
ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build/emu-asan --output-on-failure \
  -j "$JOBS" -E 'AlexNet|SteadyState|Tf32Mode|TwoTowers|MpiNccl'

echo "== The threaded parts under ThreadSanitizer (clang; OpenMP through LLVM's libomp with Archer)"
# The pipeline's workers, the towers and replicas on their device threads, the trainer's
# prefetch, the statistics: a data race stops the test (halt_on_error). TSan cannot see OpenMP's
# barriers in an uninstrumented runtime (with libgomp every parallel loop was reported), so the
# build takes libomp and Archer (libarcher.so, OMP_TOOL_LIBRARIES) tells TSan about them.
ARCHER=$(find /usr/lib/llvm-*/lib -name libarcher.so 2>/dev/null | sort -V | tail -n 1)
[ -n "$ARCHER" ] || { echo "libarcher.so not found (apt-get install libomp-dev)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCONVNET_CUDA=OFF \
  -DCONVNET_TOOLS=OFF -DCMAKE_CXX_FLAGS_DEBUG="$SANITIZE_FLAGS" -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread"
cmake --build build/tsan -j "$JOBS" --target convnet_tests
# ignore_noninstrumented_modules: libomp's own locks are not ours to report (Archer's advice).
OMP_TOOL_LIBRARIES="$ARCHER" TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan --output-on-failure -j "$JOBS" \
  -R '^(Pipeline|PipelineSources|Replicas|Towers|DeviceThreads|Trainer|Evaluate|NetBuckets|Stats)\.'

echo "== Fuzzing, a smoke run: every parser of outside input, a few seconds each (scripts/fuzz.sh)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-5}"
