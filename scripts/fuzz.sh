#!/usr/bin/env bash
# Fuzzes every parser of outside input with libFuzzer (tests/fuzz: model JSON, cuda-convnet2 cfg
# files, checkpoints, IDX plain and gzip, JPEG/PNG decoding with its crop window, and the option
# strings), everything built with clang under AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 10 s each, every target)
#
# CI runs it for a few seconds each (a smoke run: the seeds and their first mutations); longer
# runs are recorded in docs/RELIABILITY.md. Each target starts from its seeds in
# tests/fuzz/corpus/<name> (plus the repository's own model files) and keeps what it finds in
# build/fuzz/corpus/<name>; a crash is written to build/fuzz/crashes/ and fails the script, naming
# the file to reproduce it with: build/fuzz/fuzz_<name> <file>. Every crash found becomes a
# regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(model_json cuda_convnet_cfg checkpoint idx image strings)
JOBS=${JOBS:-$(nproc)}

# Debug at -O1 with line tables: quick to compile under the sanitizers, and a crash names its line.
CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCONVNET_FUZZ=ON \
  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only -fno-omit-frame-pointer -Wno-pass-failed" \
  -DCONVNET_CUDA=OFF -DCONVNET_MPI=OFF -DCONVNET_TESTS=OFF -DCONVNET_TOOLS=OFF -DCONVNET_MARCH=portable >/dev/null
cmake --build build/fuzz -j "$JOBS" --target "${TARGETS[@]/#/fuzz_}"

mkdir -p build/fuzz/crashes
# The cuda-convnet2 model files (tests/data/cuda-convnet2) as seeds: each layers file with its
# params file, in the target's "layers %% params" form.
cfg_seeds=build/fuzz/seeds/cuda_convnet_cfg
mkdir -p "$cfg_seeds"
for layers in tests/data/cuda-convnet2/layers-*.cfg; do
  params=${layers/layers-/layer-params-}
  [ -f "$params" ] && { cat "$layers"; printf '\n%%%%\n'; cat "$params"; } > "$cfg_seeds/$(basename "$layers")"
done

failed=()
for t in "${TARGETS[@]}"; do
  work=build/fuzz/corpus/$t
  mkdir -p "$work"
  extra=()
  [ "$t" = model_json ] && extra=(tests/data)
  [ "$t" = cuda_convnet_cfg ] && extra=("$cfg_seeds")
  echo "== fuzz_$t: ${SECONDS_EACH} s"
  # rss_limit: an input may make a parser reserve what a header promises, within the limits the
  # parsers enforce (about 1 GiB for a 16384x16384 PNG); more is a bug the fuzzer reports.
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "build/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=3072 -timeout=20 -max_len=65536 \
      -artifact_prefix="build/fuzz/crashes/$t-" -print_final_stats=1 "$work" "tests/fuzz/corpus/$t" \
      "${extra[@]}" 2>"build/fuzz/$t.log"; then
    failed+=("$t")
    grep -E "ERROR|SUMMARY|Test unit written|terminate|what\(\)" "build/fuzz/$t.log" | head -20 || true
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "build/fuzz/$t.log" | tr '\n' ' '
  echo
done
if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]} (inputs in build/fuzz/crashes/, logs in build/fuzz/*.log)" >&2
  exit 1
fi
echo "fuzz: no crash in ${TARGETS[*]}"
