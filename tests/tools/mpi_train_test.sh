#!/usr/bin/env bash
# ctest: data parallelism over MPI. `mpirun -np 2 convnet-train` (each rank half of every batch,
# gradients summed over the ranks) ends with the weights of one process trained on the whole
# batches, up to float32 summation order, dropout included (masks keyed by the example's place
# in the global batch); both ranks' weights agree (the log's hashes); rank 0
# alone writes; a resume with another number of processes and a batch that does not split are
# refused, every rank exiting non-zero without a hang.
#   mpi_train_test.sh BINARY MPIEXEC
set -euo pipefail
BIN=$1
MPIEXEC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# CI runs as root; Open MPI refuses root unless told, and a 2-core machine needs --oversubscribe
# only when it has fewer slots than ranks.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(timeout 300 "$MPIEXEC" -np 2 --oversubscribe)
DATA="generated[count=256;classes=4;channels=1;size=16;seed=9]"

MODEL=$(dirname "$0")/../data/dropout_net_16.json  # conv, pool, dropout, fc
COMMON=(--layer-def "$MODEL" --data "$DATA" --batch 32 --epochs 2 --mirror --threads 1 --quiet)

"$BIN" "${COMMON[@]}" --save-dir "$WORK/one" > "$WORK/one.txt"
"${MPIRUN[@]}" "$BIN" "${COMMON[@]}" --save-dir "$WORK/two" > "$WORK/two.txt" 2>&1 || { cat "$WORK/two.txt"; fail "mpirun -np 2 failed"; }
cat "$WORK/two.txt"
grep -q "2 processes, 16 images each" "$WORK/two.txt" || fail "the run does not say it has 2 processes"
[ "$(grep -c '^done: 2 epochs, step 16' "$WORK/two.txt")" = 1 ] || fail "not exactly one rank (0) reported the end"
ls "$WORK/two"/ckpt-e0002-b000000.safetensors > /dev/null || fail "no epoch-2 checkpoint from rank 0"

python3 "$(dirname "$0")/compare_checkpoints.py" "$WORK/one/ckpt-e0002-b000000.safetensors" \
  "$WORK/two/ckpt-e0002-b000000.safetensors" || fail "2 ranks do not train what 1 process trains"
python3 - "$WORK/one" "$WORK/two" <<'PY' || fail "the 2-rank log is not the 1-process log"
import json, sys
# Both ranks' weights agreed at each epoch's end; the batch costs are the global batches'.
log2 = [json.loads(l) for l in open(sys.argv[2] + "/log.jsonl")]
log1 = [json.loads(l) for l in open(sys.argv[1] + "/log.jsonl")]
epochs = [e for e in log2 if e["event"] == "epoch"]
assert len(epochs) == 2 and all(len(e["weight_hashes"]) == 2 and len(set(e["weight_hashes"])) == 1 for e in epochs), epochs
c1 = [e["cost"] for e in log1 if e["event"] == "batch"]
c2 = [e["cost"] for e in log2 if e["event"] == "batch"]
assert len(c1) == len(c2) == 16 and max(abs(a - b) for a, b in zip(c1, c2)) < 1e-4 * max(c1), (c1, c2)
PY

# Refusals: every rank exits non-zero, promptly.
set +e
"$BIN" "${COMMON[@]}" --save-dir "$WORK/two" --resume --epochs 3 > "$WORK/err1.txt" 2>&1
rc=$?
set -e
[ $rc = 2 ] || fail "a 1-process resume of a 2-process run exited $rc"
grep -q "was written by a run of 2 process(es)" "$WORK/err1.txt" || { cat "$WORK/err1.txt"; fail "no world-size message"; }
set +e
"${MPIRUN[@]}" "$BIN" "${COMMON[@]}" --batch 31 > "$WORK/err2.txt" 2>&1
rc=$?
set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "mpirun with --batch 31 exited $rc (124: it hung)"
grep -q "does not split over 2 processes" "$WORK/err2.txt" || { cat "$WORK/err2.txt"; fail "no batch message"; }
# A divergence is decided by all ranks together: they all exit 3, rank 0 alone says where.
set +e
"${MPIRUN[@]}" "$BIN" "${COMMON[@]}" --max-grad-norm 1e-9 > "$WORK/err3.txt" 2>&1
rc=$?
set -e
[ $rc = 3 ] || { cat "$WORK/err3.txt"; fail "a divergence under mpirun exited $rc, not 3"; }
[ "$(grep -c 'exceeds the limit' "$WORK/err3.txt")" = 1 ] || { cat "$WORK/err3.txt"; fail "not one divergence message"; }

# A rank killed mid-run: mpirun ends the other one within seconds, exits non-zero, and the last
# complete checkpoint (rank 0 writes each atomically) still loads into a resume.
"${MPIRUN[@]}" "$BIN" "${COMMON[@]}" --data "generated[count=4096;classes=4;channels=1;size=16;seed=9]" \
  --epochs 50 --save-every 4 --save-dir "$WORK/killed" > "$WORK/killed.txt" 2>&1 &
runner=$!
# (Checkpoints come and go as --keep removes old ones: list the folder, not the files.)
has_checkpoint() { ls "$WORK/killed" 2> /dev/null | grep -q '^ckpt-'; }
for _ in $(seq 600); do
  has_checkpoint && break
  sleep 0.1
done
has_checkpoint || fail "the long run wrote no checkpoint"
pkill -9 -n -f -- "--save-dir $WORK/killed" || fail "no rank to kill"
killed_at=$(date +%s)
set +e
wait $runner
rc=$?
set -e
took=$(( $(date +%s) - killed_at ))
[ $rc != 0 ] || fail "mpirun exited 0 after a rank was killed"
[ $took -le 30 ] || fail "the other rank took ${took} s to end"
echo "killed one rank: mpirun exited $rc, ${took} s later"
"${MPIRUN[@]}" "$BIN" "${COMMON[@]}" --data "generated[count=4096;classes=4;channels=1;size=16;seed=9]" \
  --epochs 1 --save-dir "$WORK/killed" --resume > "$WORK/resumed.txt" 2>&1 || { cat "$WORK/resumed.txt"; fail "the surviving checkpoint does not resume"; }
grep -q "resumed from" "$WORK/resumed.txt" || fail "no resume after the kill"
echo "mpi: all checks passed"
