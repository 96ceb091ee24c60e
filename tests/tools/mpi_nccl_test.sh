#!/usr/bin/env bash
# ctest (cuda_emu builds): data parallelism across processes on GPUs. `mpirun -np 2 convnet-train
# --device cuda` (each rank its own GPU, cuda:<local rank>; each rank half of every batch; the
# gradient buckets summed by NCCL on the GPUs' streams, its communicator's id broadcast over MPI)
# ends with the weights of one process trained on one GPU with the whole batches, up to float32
# summation order, dropout included. Under cuda_emu the NCCL calls are the emulator's (summed
# with MPI on its host memory): this proves the host logic, not NCCL itself. The same with the
# hybrid on four lanes of each rank's GPU.
#   mpi_nccl_test.sh BINARY MPIEXEC
set -euo pipefail
BIN=$1
MPIEXEC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MODEL=$(dirname "$0")/../data/dropout_net_16.json  # conv, pool, dropout, fc
COMMON=(--layer-def "$MODEL" --data "generated[count=128;classes=4;channels=1;size=16;seed=9]" --batch 32
        --epochs 1 --mirror --threads 1 --quiet)

"$BIN" "${COMMON[@]}" --device cuda:0 --save-dir "$WORK/one" > "$WORK/one.txt"
timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$BIN" "${COMMON[@]}" --device cuda --save-dir "$WORK/two" \
  > "$WORK/two.txt" 2>&1 || { cat "$WORK/two.txt"; fail "mpirun -np 2 failed"; }
cat "$WORK/two.txt"
grep -q "2 processes, 16 images each" "$WORK/two.txt" || fail "the run does not say it has 2 processes"
python3 "$(dirname "$0")/compare_checkpoints.py" "$WORK/one/ckpt-e0001-b000000.safetensors" \
  "$WORK/two/ckpt-e0001-b000000.safetensors" || fail "2 ranks on 2 GPUs do not train what 1 GPU trains"
python3 - "$WORK/two" <<'PY' || fail "the ranks' weight hashes differ"
import json, sys
log = [json.loads(l) for l in open(sys.argv[1] + "/log.jsonl")]
epoch = [e for e in log if e["event"] == "epoch"][0]
assert len(epoch["weight_hashes"]) == 2 and len(set(epoch["weight_hashes"])) == 1, epoch
PY

# The hybrid's four logical devices as four lanes (streams) of each rank's GPU: the gradient
# buckets of all four lanes are summed by NCCL on lane 0, after the other lanes' backward.
HYBRID=(--layer-def "$(dirname "$0")/../data/hybrid_4dev.json" --batch 16 --epochs 1 --threads 1 --quiet
        --data "generated[count=64;classes=5;channels=3;size=12;seed=9]")
"$BIN" "${HYBRID[@]}" --device cuda:0 --save-dir "$WORK/hybrid-one" > "$WORK/hybrid-one.txt"
timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$BIN" "${HYBRID[@]}" --device cuda:0,cuda:0,cuda:0,cuda:0 \
  --save-dir "$WORK/hybrid-two" > "$WORK/hybrid-two.txt" 2>&1 || { cat "$WORK/hybrid-two.txt"; fail "the hybrid on lanes under mpirun failed"; }
grep -q "4 lanes side by side: cuda:0, cuda:0 lane 1, cuda:0 lane 2, cuda:0 lane 3" "$WORK/hybrid-two.txt" \
  || { cat "$WORK/hybrid-two.txt"; fail "the hybrid does not run on four lanes"; }
python3 "$(dirname "$0")/compare_checkpoints.py" "$WORK/hybrid-one/ckpt-e0001-b000000.safetensors" \
  "$WORK/hybrid-two/ckpt-e0001-b000000.safetensors" || fail "2 ranks with 4 lanes each do not train what 1 GPU trains"
echo "mpi_nccl_test: 2 ranks on 2 GPUs equal one GPU; so do 2 ranks of 4 lanes each"
