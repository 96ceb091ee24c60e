#!/usr/bin/env bash
# The one script a lent-GPU session runs: builds convnet with CUDA for sm_90 (C++ tests and
# kernel-bench included), runs nvidia-smi, ctest (GPU tests included), pip-installs the Python
# package and runs pytest, runs build/gpu/kernel-bench and bench/gpu_alexnet.py (convnet against
# PyTorch/cuDNN), then, with the time left, the CUDA kernels' tests under compute-sanitizer
# (memcheck, racecheck, synccheck). Every log goes under ${OUT:-./gpu-out}/ (8 files at most: summary.txt,
# system.txt, build.log, ctest.log, pytest.log, kernels.log, alexnet.log, alexnet.json). A failing
# step does not stop the others; each step's status is in summary.txt; the exit status is 1 when
# any step failed (or did not run for lack of time), else 0. Each step has a timeout, and all of
# them together fit GPU_CHECK_BUDGET_S (default 540 s, so the run ends inside a 600 s call).
#
# Before the session, HERE (with internet):  bash scripts/fetch-gpu-wheels.sh
#   -> .whl/ (git-ignored) with the scipy-openblas32, nlohmann-json and importlib-resources wheels
#      and GoogleTest's sources, which the GPU image lacks and cannot download.
# On the device (the device tool's run):      command: bash scripts/gpu-check.sh
#                                             carry: [".whl"]   timeout_s: 600
#
# Environment: OUT, PYTHON (python3), WHL_DIR (.whl), GPU_CHECK_SITE (/tmp/site: where the wheels
# are installed, put on PYTHONPATH), GPU_BUILD_DIR (build/gpu), CUDA_ARCH (90), JOBS (nproc),
# GPU_CHECK_BUDGET_S (540), GTEST_FROM_SOURCE=1 (build GoogleTest from the carried sources even
# when the system has it), GPU_BENCH_ARGS (extra options for bench/gpu_alexnet.py),
# GPU_PYTEST_ARGS (extra pytest options, e.g. --ignore=python/test_soak.py), GPU_CHECK_SKIP
# (steps not to run, e.g. "kernel-bench alexnet" for a rerun after a fix: recorded as SKIP; a
# name that is not a step stops the script at once, exit status 2, listing the steps).
# When pytest dies of a signal, the test file it died in runs once more under a debugger (gdb,
# else cuda-gdb) and its native backtrace goes to pytest.log.
# shellcheck disable=SC2317,SC2012,SC2016  # functions run through `bash -c` (export -f), their "$@" quoted; ls for display
set -uo pipefail  # no -e: a failing step is recorded and the next one runs
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
BUDGET=${GPU_CHECK_BUDGET_S:-540}
GPU_CHECK_SKIP=${GPU_CHECK_SKIP:-}
# The steps GPU_CHECK_SKIP may name, checked before anything runs: a misspelt name would
# otherwise run its step and spend the device time the skip was meant to save.
SAN_TOOLS="memcheck racecheck synccheck"  # compute-sanitizer's tools, run at the end
SKIPPABLE="nvidia-smi wheels googletest build ctest pytest pytest-2 pytest-3 pytest-bt kernel-bench alexnet"
for tool in $SAN_TOOLS; do SKIPPABLE+=" san-$tool"; done
IFS=', ' read -ra SKIP_NAMES <<<"$GPU_CHECK_SKIP"
for name in "${SKIP_NAMES[@]}"; do
  if [[ " $SKIPPABLE " != *" $name "* ]]; then
    echo "gpu-check: GPU_CHECK_SKIP names '$name', which is not a step (steps: $SKIPPABLE)" >&2
    exit 2
  fi
done
T0=$(date +%s)
PY=${PYTHON:-python3}
WHL_DIR=${WHL_DIR:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
BUILD=${GPU_BUILD_DIR:-build/gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
GTEST_PREFIX=""

SUMMARY=$OUT/summary.txt
SYSTEM=$OUT/system.txt
BUILD_LOG=$OUT/build.log
CTEST_LOG=$OUT/ctest.log
PYTEST_LOG=$OUT/pytest.log
KERNELS_LOG=$OUT/kernels.log
ALEX_LOG=$OUT/alexnet.log
ALEX_JSON=$OUT/alexnet.json
rm -f "$SUMMARY" "$SYSTEM" "$BUILD_LOG" "$CTEST_LOG" "$PYTEST_LOG" "$KERNELS_LOG" "$ALEX_LOG" "$ALEX_JSON"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

FAILED=0
FAILED_LOGS=()
{
  echo "# scripts/gpu-check.sh  $(date -Is)  host $(uname -n)  budget ${BUDGET}s"
  printf '%-14s %-8s %-6s %6s  %s\n' step status rc seconds note
} >"$SUMMARY"

now() { date +%s; }
remaining() { echo $((T0 + BUDGET - $(now))); }
# record STEP STATUS RC SECONDS NOTE -- one line of summary.txt; FAIL, TIMEOUT and NOT-RUN fail the check
record() {
  printf '%-14s %-8s %-6s %6s  %s\n' "$1" "$2" "$3" "$4" "$5" >>"$SUMMARY"
  echo "[gpu-check] $1: $2 (rc $3, $4 s) $5"
  case $2 in FAIL | TIMEOUT | NOT-RUN) FAILED=1 ;; esac
}
# run_step NAME CAP_SECONDS LOG CMD... -- runs CMD under `timeout`, min(CAP, time left), output
# appended to LOG; records it; returns CMD's exit status.
run_step() {
  local name=$1 capsec=$2 log=$3 t start rc dur status
  shift 3
  if [[ " ${GPU_CHECK_SKIP//,/ } " == *" $name "* ]]; then
    echo "== [$name] skipped (GPU_CHECK_SKIP)" >>"$log"
    record "$name" SKIP - 0 "GPU_CHECK_SKIP"
    return 125
  fi
  t=$(remaining)
  ((t > capsec)) && t=$capsec
  if ((t < 20)); then
    echo "== [$name] not run: out of time (budget ${BUDGET}s)" >>"$log"
    record "$name" NOT-RUN - 0 "out of time (GPU_CHECK_BUDGET_S=${BUDGET})"
    return 125
  fi
  echo "== [$name] $(date +%T) (timeout ${t}s): $*" >>"$log"
  start=$(now)
  timeout -k 10 "$t" "$@" >>"$log" 2>&1
  rc=$?
  dur=$(($(now) - start))
  echo "== [$name] exit status $rc after ${dur}s" >>"$log"
  status=PASS
  if ((rc == 124 || rc == 137)); then
    status=TIMEOUT
  elif ((rc != 0)); then
    status=FAIL
  fi
  record "$name" "$status" "$rc" "$dur" "${STEP_NOTE:-}$([ $status = TIMEOUT ] && echo " timed out after ${t}s")"
  [ $status = PASS ] || FAILED_LOGS+=("$log")
  STEP_NOTE=""
  return $rc
}

# ---------------------------------------------------------------- tools on PATH
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
PY_EXE=$(command -v "$PY" || echo "$PY")
PY_BIN=$("$PY" -c 'import os, sys; print(os.path.join(sys.prefix, "bin"))' 2>/dev/null)
for tool in cmake ninja; do  # the image has them as Python packages, in its venv's bin
  if ! command -v $tool >/dev/null 2>&1 && [ -n "$PY_BIN" ] && [ -x "$PY_BIN/$tool" ]; then
    export PATH=$PATH:$PY_BIN
  fi
done
export PY PY_EXE ROOT BUILD ARCH JOBS WHL_DIR SITE

# ---------------------------------------------------------------- the machine
{
  echo "date      : $(date -Is)"
  echo "kernel    : $(uname -srm)"
  echo "cpus      : $(nproc); memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "cpu model : $(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//');" \
    "$(grep -m 1 -o -w 'avx512f' /proc/cpuinfo || echo 'no avx512f')"
  echo "python    : $PY_EXE ($("$PY" --version 2>&1))"
  echo "nvcc      : $(nvcc --version 2>/dev/null | tail -n 2 | tr '\n' ' ' || echo 'not found')"
  echo "cmake     : $(cmake --version 2>/dev/null | head -n 1 || echo 'not found')"
  echo "ninja     : $(ninja --version 2>/dev/null || echo 'not found')"
  echo "c++       : $(c++ --version 2>/dev/null | head -n 1 || echo 'not found')"
  echo "packages  :"
  "$PY" -m pip list --disable-pip-version-check 2>/dev/null |
    grep -iE '^(torch|numpy|pybind11|scikit[-_]build[-_]core|cmake|ninja|pytest|scipy[-_]openblas32|nlohmann[-_]json|importlib[-_]resources|convnet) ' |
    sed 's/^/  /'
  echo "carried   : $(ls "$WHL_DIR" 2>/dev/null | tr '\n' ' ')"
  echo
} >"$SYSTEM"
if command -v nvidia-smi >/dev/null 2>&1; then
  run_step nvidia-smi 60 "$SYSTEM" nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
    --format=csv >>"$SYSTEM" 2>&1
else
  echo "nvidia-smi: not found" >>"$SYSTEM"
  record nvidia-smi FAIL 127 0 "nvidia-smi not found: no NVIDIA driver on this machine"
fi

# ---------------------------------------------------------------- carried wheels
shopt -s nullglob
WHEELS=("$WHL_DIR"/*.whl)
shopt -u nullglob
if ((${#WHEELS[@]})); then
  STEP_NOTE="${#WHEELS[@]} wheel(s) from $WHL_DIR into $SITE; "
  if run_step wheels 120 "$BUILD_LOG" "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --no-compile --upgrade --target "$SITE" "${WHEELS[@]}"; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  fi
else
  record wheels SKIP - 0 "no wheels in $WHL_DIR (bash scripts/fetch-gpu-wheels.sh here, carry .whl there)"
fi
for mod in scipy_openblas32 nlohmann_json; do
  if "$PY" -c "import $mod" >>"$BUILD_LOG" 2>&1; then
    echo "import $mod: ok ($("$PY" -c "import $mod, os; print(os.path.dirname($mod.__file__))"))" >>"$SYSTEM"
  else
    echo "import $mod: FAILED (the build falls back to the system's package, if any)" >>"$SYSTEM"
  fi
done

# ---------------------------------------------------------------- GoogleTest
gtest_on_system() {
  local f
  for f in /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake /usr/lib/cmake/GTest/GTestConfig.cmake \
    /usr/lib64/cmake/GTest/GTestConfig.cmake /usr/local/lib/cmake/GTest/GTestConfig.cmake \
    /usr/local/lib64/cmake/GTest/GTestConfig.cmake /usr/lib/x86_64-linux-gnu/libgtest.a \
    /usr/lib/x86_64-linux-gnu/libgtest.so /usr/lib/libgtest.a /usr/local/lib/libgtest.a; do
    [ -e "$f" ] && echo "$f" && return 0
  done
  return 1
}
build_gtest() {  # from the carried tarball, else the image's /usr/src/googletest; into /tmp/gtest
  local src=/usr/src/googletest
  rm -rf /tmp/gtest-src /tmp/gtest-build /tmp/gtest
  if [ -f "$WHL_DIR/googletest-src.tar.gz" ]; then
    mkdir -p /tmp/gtest-src && tar -xzf "$WHL_DIR/googletest-src.tar.gz" -C /tmp/gtest-src || return
    src=$(dirname "$(find /tmp/gtest-src -maxdepth 2 -name CMakeLists.txt | head -n 1)")
  fi
  echo "GoogleTest sources: $src"
  cmake -S "$src" -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
    -DINSTALL_GTEST=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX=/tmp/gtest &&
    cmake --build /tmp/gtest-build -j "$JOBS" && cmake --install /tmp/gtest-build
}
export -f build_gtest
if found=$(gtest_on_system) && [ "${GTEST_FROM_SOURCE:-0}" != 1 ]; then
  echo "GoogleTest  : system ($found)" >>"$SYSTEM"
elif [ -f "$WHL_DIR/googletest-src.tar.gz" ] || [ -f /usr/src/googletest/CMakeLists.txt ]; then
  STEP_NOTE="no system GoogleTest: built from sources; "
  run_step googletest 120 "$BUILD_LOG" bash -c build_gtest && GTEST_PREFIX=/tmp/gtest
  echo "GoogleTest  : ${GTEST_PREFIX:-build from sources FAILED}" >>"$SYSTEM"
else
  echo "GoogleTest  : none (no system package, no carried sources)" >>"$SYSTEM"
fi
export GTEST_PREFIX

# ---------------------------------------------------------------- CMake build (CUDA, sm_90)
build_all() {
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DCONVNET_CUDA=ON -DCONVNET_TESTS=ON -DCONVNET_TOOLS=ON -DPython_EXECUTABLE="$PY_EXE" \
    ${GTEST_PREFIX:+"-DCMAKE_PREFIX_PATH=$GTEST_PREFIX" "-DGTEST_ROOT=$GTEST_PREFIX"} || return
  cmake --build "$BUILD" -j "$JOBS" -- -k 0  # -k 0: every error in one go
}
export -f build_all
STEP_NOTE="cmake -G Ninja, Release, sm_$ARCH, into $BUILD; "
run_step build 300 "$BUILD_LOG" bash -c build_all
BUILD_RC=$?
grep -E "convnet: |GoogleTest not found|CUDA backend" "$BUILD_LOG" | sed 's/^-- //' >>"$SYSTEM"

# ---------------------------------------------------------------- pip install, in the background
# (it compiles the module again, on the CPUs, while ctest runs on the GPU)
pip_install() {
  "$PY" -m pip install -v --disable-pip-version-check --root-user-action=ignore --no-build-isolation \
    --no-deps --no-index --config-settings=cmake.define.CONVNET_CUDA=ON \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" "$ROOT"
}
export -f pip_install
PIP_CAP=$(remaining)
((PIP_CAP > 300)) && PIP_CAP=300
PIP_START=$(now)
echo "== [pip-install] $(date +%T) (timeout ${PIP_CAP}s): pip install --no-build-isolation ." >"$PYTEST_LOG"
timeout -k 10 "$PIP_CAP" bash -c pip_install >>"$PYTEST_LOG" 2>&1 &
PIP_PID=$!

# ---------------------------------------------------------------- ctest
if [ -x "$BUILD/convnet_tests" ]; then
  STEP_NOTE="all C++ tests, GPU ones included; "
  run_step ctest 180 "$CTEST_LOG" env OMP_NUM_THREADS="${CTEST_OMP_THREADS:-2}" \
    ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -j "${CTEST_JOBS:-8}" --timeout 120
  STEP_NOTE=""
  if line=$(grep -E "tests passed|tests failed" "$CTEST_LOG" | tail -n 1) && [ -n "$line" ]; then
    echo "ctest: $line; $(grep -c '\*\*\*Skipped' "$CTEST_LOG") skipped" >>"$SUMMARY"
  fi
elif ((BUILD_RC != 0)); then
  echo "C++ tests not run: the build failed (see build.log)" >"$CTEST_LOG"
  record ctest NOT-RUN - 0 "the build failed"
else
  echo "C++ tests not built: GoogleTest not found (no system package, no carried sources)" >"$CTEST_LOG"
  record ctest SKIP - 0 "C++ tests not built: GoogleTest not found"
fi

# ---------------------------------------------------------------- pytest
wait "$PIP_PID"
PIP_RC=$?
PIP_DUR=$(($(now) - PIP_START))
echo "== [pip-install] exit status $PIP_RC after ${PIP_DUR}s" >>"$PYTEST_LOG"
if ((PIP_RC == 0)); then
  record pip-install PASS 0 "$PIP_DUR" "pip install --no-build-isolation . (CUDA on)"
elif ((PIP_RC == 124 || PIP_RC == 137)); then
  record pip-install TIMEOUT "$PIP_RC" "$PIP_DUR" "timed out after ${PIP_CAP}s"
  FAILED_LOGS+=("$PYTEST_LOG")
else
  record pip-install FAIL "$PIP_RC" "$PIP_DUR" "see pytest.log"
  FAILED_LOGS+=("$PYTEST_LOG")
fi
run_pytest() {  # ARGS...: from tests/, so that `import convnet` finds the installed package
  # shellcheck disable=SC2086  # GPU_PYTEST_ARGS is a list of options
  cd "$ROOT/tests" && exec "$PY" -m pytest -q -rsxf --durations=15 -p no:cacheprovider \
    -o faulthandler_timeout=240 ${GPU_PYTEST_ARGS:-} "$@" python
}
# FILE: runs one test file (tests/python/FILE) under a debugger and prints the native backtrace
# of the thread that died, then every thread's top frames.
debug_crash() {
  local dbg
  dbg=$(command -v gdb || command -v cuda-gdb || ls /usr/local/cuda/bin/cuda-gdb 2>/dev/null) ||
    { echo "no gdb or cuda-gdb on this machine: no backtrace"; return 1; }
  echo "debugger: $dbg"
  cd "$ROOT/tests" && "$dbg" -q -batch -ex "set pagination off" -ex "set confirm off" -ex "handle SIGPIPE nostop noprint pass" -ex run \
    -ex "bt 40" -ex "thread apply all bt 8" --args "$PY_EXE" -m pytest -x -q -p no:cacheprovider "python/$1"
}
export -f run_pytest debug_crash
if ((PIP_RC == 0)); then
  # A crash (death by a signal; 124 and 137 are timeouts) ends pytest: the file it died in is run
  # under a debugger for a backtrace, then the suite again without that file, twice at most.
  PYTEST_IGNORE=()
  for attempt in 1 2 3; do
    STEP_NOTE="$("$PY" -c 'import convnet; print(f"convnet.cuda_compiled()={convnet.cuda_compiled()}, cuda_device_count()={convnet.cuda_device_count()}; ")' 2>&1 | tail -n 1)"
    ((attempt > 1)) && STEP_NOTE+="without ${PYTEST_IGNORE[*]}; "
    run_step "pytest$([ $attempt = 1 ] || echo "-$attempt")" 200 "$PYTEST_LOG" bash -c 'run_pytest "$@"' _ "${PYTEST_IGNORE[@]}"
    rc=$?
    ((rc > 128 && rc != 137 && attempt < 3)) || break
    crashed=$(grep -oE "tests/python/test_[A-Za-z0-9_]+\.py" "$PYTEST_LOG" | tail -n 1)
    [ -n "$crashed" ] || break
    STEP_NOTE="native backtrace of $(basename "$crashed") in pytest.log; "
    run_step pytest-bt 120 "$PYTEST_LOG" bash -c 'debug_crash "$1"' _ "$(basename "$crashed")"
    grep -E "^#[0-9]+ " "$PYTEST_LOG" | head -n 6 | cut -c 1-200 | sed 's/^/pytest-bt: /' >>"$SUMMARY"
    PYTEST_IGNORE+=("--ignore=python/$(basename "$crashed")")
  done
  grep -E " in [0-9.]+s" "$PYTEST_LOG" | tail -n 1 | sed 's/^/pytest: /' >>"$SUMMARY"
  grep -E "^SKIPPED .*test_gpu" "$PYTEST_LOG" | head -n 3 | cut -c 1-200 | sed 's/^/pytest: /' >>"$SUMMARY"
else
  record pytest NOT-RUN - 0 "pip install failed"
fi

# ---------------------------------------------------------------- kernel-bench
if [ -x "$BUILD/kernel-bench" ]; then
  run_step kernel-bench 60 "$KERNELS_LOG" "$BUILD/kernel-bench"
elif compgen -G "bench/kernels/*.c*" >/dev/null || compgen -G "bench/kernels/*.cu" >/dev/null; then
  echo "bench/kernels has sources but $BUILD/kernel-bench was not built (see build.log)" >"$KERNELS_LOG"
  record kernel-bench NOT-RUN - 0 "not built (see build.log)"
else
  echo "no bench/kernels sources: kernel-bench is not part of this tree yet" >"$KERNELS_LOG"
  record kernel-bench SKIP - 0 "no bench/kernels sources in this tree"
fi

# ---------------------------------------------------------------- AlexNet against PyTorch
if ((PIP_RC == 0)); then
  left=$(remaining)
  ((left > 240)) && left=240
  # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of options
  run_step alexnet 240 "$ALEX_LOG" "$PY" bench/gpu_alexnet.py --json "$ALEX_JSON" --profile \
    --budget-s $((left > 60 ? left - 30 : 30)) ${GPU_BENCH_ARGS:-}
  "$PY" - "$ALEX_JSON" >>"$SUMMARY" 2>/dev/null <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if "skipped" in d:
    print("alexnet:", d["skipped"])
by = {(r["net"], r["math"], r["framework"]): r for r in d.get("results", [])}
for (net, math, fw), r in by.items():
    if fw != "convnet":
        continue
    t = by.get((net, math, "torch"))
    print(f"alexnet: {net} {math}: convnet {r['step_ms']:.1f} ms/step ({r['images_per_s']:.0f} images/s, "
          f"peak {r['peak_mib']:.0f} MiB)" + (f", torch {t['step_ms']:.1f} ms ({t['peak_mib']:.0f} MiB), "
          f"torch/convnet {t['step_ms'] / r['step_ms']:.2f}" if t else ""))
for e in d.get("errors", []):
    print(f"alexnet: ERROR {e['net']} {e['math']} {e['where']}: {e['error'][:200]}")
EOF
else
  echo "not run: pip install failed" >"$ALEX_LOG"
  record alexnet NOT-RUN - 0 "pip install failed"
fi

# ---------------------------------------------------------------- compute-sanitizer
# The CUDA kernels' tests once more under each of compute-sanitizer's tools: memcheck (accesses
# out of bounds or misaligned, leaks), racecheck (shared-memory hazards), synccheck (barriers in
# divergent code). They run many times slower, so they take what time is left, after the
# benchmarks; a tool without time is skipped (SKIP, not a failure). Output goes to ctest.log.
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
SANITIZE_FILTER='Cuda*:-*AlexNet*:*SteadyState*:*Tf32Mode*:*TwoTowers*'
if [ -z "$SANITIZER" ]; then
  record sanitize SKIP - 0 "compute-sanitizer not found"
elif [ ! -x "$BUILD/convnet_tests" ] || ! nvidia-smi -L >/dev/null 2>&1; then
  record sanitize SKIP - 0 "no GPU, or the C++ tests were not built"
else
  for tool in $SAN_TOOLS; do
    if (($(remaining) < 60)); then
      record "san-$tool" SKIP - 0 "out of time (GPU_CHECK_BUDGET_S=${BUDGET}); run again with a larger budget"
      continue
    fi
    extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    STEP_NOTE="compute-sanitizer --tool $tool, $SANITIZE_FILTER; "
    run_step "san-$tool" 150 "$CTEST_LOG" "$SANITIZER" --tool "$tool" "${extra[@]}" --error-exitcode 1 \
      "$BUILD/convnet_tests" --gtest_filter="$SANITIZE_FILTER"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|========= (Invalid|Race|Barrier)" "$CTEST_LOG" | tail -n 2 |
      sed "s/^/san-$tool: /" >>"$SUMMARY"
  done
fi

# ---------------------------------------------------------------- report
TOTAL=$(($(now) - T0))
{
  echo "total ${TOTAL}s; logs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  if ((FAILED)); then echo "RESULT: FAILED"; else echo "RESULT: PASSED"; fi
} >>"$SUMMARY"

echo
for log in $(printf '%s\n' "${FAILED_LOGS[@]}" | awk '!seen[$0]++'); do
  if [ "$log" = "$BUILD_LOG" ]; then
    echo "---- first errors in build.log ----"
    grep -E "error|FAILED:|CMake Error" "$log" | head -n 20 | cut -c 1-240
  fi
  echo "---- last lines of $(basename "$log") ----"
  tail -n 15 "$log" | cut -c 1-240
done
if [ -s "$KERNELS_LOG" ]; then
  echo "---- kernels.log (last 30 lines) ----"
  tail -n 30 "$KERNELS_LOG" | cut -c 1-240
fi
if grep -q '^| net |' "$ALEX_LOG" 2>/dev/null; then
  echo "---- AlexNet, convnet vs PyTorch ----"
  sed -n '/^GPU training step, batch/,$p' "$ALEX_LOG" | cut -c 1-300
elif [ -s "$ALEX_LOG" ]; then
  echo "---- alexnet.log (last 10 lines) ----"
  tail -n 10 "$ALEX_LOG" | cut -c 1-240
fi
echo "---- summary.txt ----"
cat "$SUMMARY"
exit "$FAILED"
