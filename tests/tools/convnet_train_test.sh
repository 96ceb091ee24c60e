#!/usr/bin/env bash
# ctest: convnet-train (no Python) trains a model file on generated data, writes checkpoints and
# a log, resumes from them, and rejects bad options naming them; then trains on a folder of colour
# JPEGs (scripts/make_shapes.py, which needs python3 with numpy and Pillow) with the AlexNet
# paper's whole augmentation and runs the 10-view test.
#   convnet_train_test.sh BINARY SOURCE_DIR
set -euo pipefail
BIN=$1
SRC=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA="generated[count=256;classes=4;channels=1;size=16;seed=9]"
fail() { echo "FAIL: $*"; exit 1; }

cat > "$WORK/model.json" <<'JSON'
{"layers": [
  {"name": "data", "type": "input", "channels": 1, "size": 16},
  {"name": "labels", "type": "labels"},
  {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 8, "size": 3, "padding": 1, "neuron": "relu", "init": "kaiming"},
  {"name": "pool1", "type": "pool", "inputs": ["conv1"], "size": 3, "stride": 2},
  {"name": "fc2", "type": "fc", "inputs": ["pool1"], "outputs": 4, "init": "xavier"},
  {"name": "cost", "type": "softmax_cost", "inputs": ["fc2", "labels"]}
]}
JSON
echo '{"conv1": {"epsW": 0.02, "epsB": 0.02}, "fc2": {"epsW": 0.02, "epsB": 0.02}}' > "$WORK/params.json"

"$BIN" --help > "$WORK/help.txt"
grep -q -- "--layer-params" "$WORK/help.txt" || fail "--help does not list --layer-params"
grep -q -- "--batch, --mini N" "$WORK/help.txt" || fail "--help does not show --mini as --batch's alias"

"$BIN" --layer-def "$WORK/model.json" --layer-params "$WORK/params.json" --data-path "$DATA" \
  --epochs 2 --mini 32 --save-path "$WORK/run" --print-freq 4 --schedule "plateau[patience=1]" > "$WORK/out1.txt"
cat "$WORK/out1.txt"
grep -q "^1.4/8  cost" "$WORK/out1.txt" || fail "no progress line for epoch 1, batch 4"
grep -q "done: 2 epochs, step 16" "$WORK/out1.txt" || fail "first run did not finish 2 epochs"
acc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$WORK/out1.txt")
awk -v a="$acc" 'BEGIN { exit !(a > 0.6) }' || fail "test accuracy $acc is not above 0.6 (chance 0.25)"
ls "$WORK/run"/ckpt-e0002-b000000.safetensors > /dev/null || fail "no epoch-2 checkpoint"
[ "$(grep -c '"event":"batch"' "$WORK/run/log.jsonl")" = 16 ] || fail "log.jsonl does not hold 16 batch lines"

"$BIN" --layer-def "$WORK/model.json" --layer-params "$WORK/params.json" --data-path "$DATA" \
  --epochs 3 --mini 32 --save-path "$WORK/run" --resume "$WORK/run" --print-freq 100 \
  --schedule "plateau[patience=1]" > "$WORK/out2.txt"
cat "$WORK/out2.txt"
grep -q "resumed from .*ckpt-e0002-b000000.safetensors at step 16" "$WORK/out2.txt" || fail "did not resume at step 16"
grep -q "done: 3 epochs, step 24" "$WORK/out2.txt" || fail "resumed run did not end at epoch 3, step 24"
# `convnet train`'s names, and --resume without a path: the newest checkpoint of --save-dir.
"$BIN" --layer-def "$WORK/model.json" --layer-params "$WORK/params.json" --data "$DATA" \
  --epochs 4 --batch 32 --save-dir "$WORK/run" --resume --quiet --schedule "plateau[patience=1]" > "$WORK/out2b.txt"
grep -q "resumed from .*ckpt-e0003-b000000.safetensors at step 24" "$WORK/out2b.txt" || fail "--resume (bare) did not resume"
grep -q "done: 4 epochs, step 32" "$WORK/out2b.txt" || fail "the bare --resume run did not end at epoch 4, step 32"
[ "$(grep -c "^4\." "$WORK/out2b.txt")" = 0 ] || fail "--quiet still printed batch lines"

# Bad input: each names the culprit, exit status 2, no crash.
expect_error() {
  local want=$1; shift
  set +e
  "$BIN" "$@" > "$WORK/err.txt" 2>&1
  local rc=$?
  set -e
  [ $rc = 2 ] || fail "exit status $rc (want 2) for: $*"
  grep -q "$want" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "message lacks '$want' for: $*"; }
}
expect_error "unknown option --epoch " --layer-def "$WORK/model.json" --epoch 3
expect_error "the model's input 'data' takes 1x16x16 images, the data gives 1x20x20 (--crop N" \
  --layer-def "$WORK/model.json" --data "generated[count=64;size=20]"
expect_error "holds checkpoints of an earlier run: --resume to continue it, --overwrite" \
  --layer-def "$WORK/model.json" --data "$DATA" --save-dir "$WORK/run"
expect_error "layer-def is required" --epochs 1
expect_error "missing.json' cannot be opened" --layer-def "$WORK/missing.json" --data-path "$DATA"
echo '{"conv9": {"epsW": 1}}' > "$WORK/badparams.json"
expect_error "sets layer 'conv9'" --layer-def "$WORK/model.json" --layer-params "$WORK/badparams.json" --data-path "$DATA"
expect_error "unknown learning-rate schedule 'cosine'" --layer-def "$WORK/model.json" --data-path "$DATA" --schedule cosine
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["layer_params"] = {}; json.dump(d, open(sys.argv[2], "w"))' \
  "$WORK/model.json" "$WORK/extra_key.json"
expect_error "unknown top-level key 'layer_params'" --layer-def "$WORK/extra_key.json" --data-path "$DATA"
expect_error "multiview-test needs --crop" --layer-def "$WORK/model.json" --data-path "$DATA" --multiview-test
expect_error "unknown solver 'adam' (known: sgd, nesterov, adamw)" --layer-def "$WORK/model.json" --data-path "$DATA" --solver adam
expect_error "beta1 must be in \[0, 1)" --layer-def "$WORK/model.json" --data-path "$DATA" --solver adamw --adam-betas 1,0.9
expect_error "apply to --solver adamw only" --layer-def "$WORK/model.json" --data-path "$DATA" --adam-eps 1e-6
expect_error "saved by solver 'sgd', but this net's solver is 'nesterov'" --layer-def "$WORK/model.json" \
  --layer-params "$WORK/params.json" --data-path "$DATA" --mini 32 --resume "$WORK/run" --solver nesterov

# cuda-convnet2's own format: a layers-*.cfg with its layer-params-*.cfg (found beside it), the
# image size taken from the data; dropout2, a pool's neuron, cmrnorm, rnorm, local and per-layer
# dexp schedules all train. A misspelt key is named with its file, line and section.
cat > "$WORK/layers-tiny.cfg" <<'CFG'
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[conv1]
type=conv
inputs=data
channels=1
filters=16
padding=1
stride=1
filterSize=3
initW=0.3
sumWidth=4
neuron=relu

[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
channels=16
neuron=relu

[rnorm1]
type=cmrnorm
inputs=pool1
channels=16
size=5

[cnorm1]
type=rnorm
inputs=rnorm1
channels=16
size=3

[local2]
type=local
inputs=cnorm1
channels=16
filters=8
padding=1
stride=2
filterSize=3
initW=0.1
neuron=relu

[fc3]
type=fc
inputs=local2
outputs=32
initW=0.1
initB=0.1
neuron=relu

[drop3]
type=dropout2
inputs=fc3

[fc4]
type=fc
inputs=drop3
outputs=4
initW=0.1

[probs]
type=softmax
inputs=fc4

[logprob]
type=cost.logreg
inputs=labels,probs
CFG
cat > "$WORK/layer-params-tiny.cfg" <<'CFG'
[conv1]
epsW=dexp[base=0.02;tgtFactor=10;numSteps=2]
epsB=0.02
momW=0.9
momB=0.9
wc=0.0005

[local2]
epsW=0.02
epsB=0.02
momW=0.9
momB=0.9

[fc3]
epsW=exp[base=0.02;tgtFactor=10]
epsB=0.02
momW=0.9
momB=0.9

[fc4]
epsW=0.02
epsB=0.02
momW=0.9
momB=0.9

[rnorm1]
scale=0.0001
pow=0.75
minDiv=2

[cnorm1]
scale=0.001
pow=0.75

[drop3]
keep=0.75

[logprob]
coeff=1
topk=2
CFG
"$BIN" --layer-def "$WORK/layers-tiny.cfg" --data-path "$DATA" --epochs 6 --mini 32 \
  --save-path "$WORK/cfg" --print-freq 100 > "$WORK/out_cfg.txt"
cat "$WORK/out_cfg.txt"
grep -q "done: 6 epochs, step 48" "$WORK/out_cfg.txt" || fail "the cfg model did not train 6 epochs"
acc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$WORK/out_cfg.txt")
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "the cfg model's test accuracy $acc is not above 0.5 (chance 0.25)"
sed 's/^keep=0.75/kep=0.75/' "$WORK/layer-params-tiny.cfg" > "$WORK/layer-params-typo.cfg"
expect_error "layer-params-typo.cfg:36: section \[drop3\], key 'kep': not a key" \
  --layer-def "$WORK/layers-tiny.cfg" --layer-params "$WORK/layer-params-typo.cfg" --data-path "$DATA"

# AdamW: trains, and its checkpoint records it.
"$BIN" --layer-def "$WORK/model.json" --data-path "$DATA" --epochs 2 --mini 32 --solver adamw \
  --adam-betas 0.9,0.99 --save-path "$WORK/adam" --print-freq 100 > "$WORK/out3.txt"
cat "$WORK/out3.txt"
grep -q "done: 2 epochs, step 16" "$WORK/out3.txt" || fail "the adamw run did not finish 2 epochs"
python3 - "$WORK/adam/ckpt-e0002-b000000.safetensors" <<'PY' || fail "the adamw checkpoint does not record its solver"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
solver = json.loads(header["__metadata__"]["convnet.solver"])
assert solver["name"] == "adamw" and solver["beta2"] == 0.99 and solver["step"] == 16, solver
assert "fc2.weights.m" in header and "fc2.weights.v" in header and "fc2.weights.velocity" not in header
PY

# Two towers side by side (AlexNet-2012's layout in miniature): on cpu:0,cpu:1 they train what one
# device trains (every batch's cost and the final test the same), and --trace writes the timeline.
cat > "$WORK/towers.json" <<'JSON'
{"layers": [
  {"name": "data", "type": "input", "channels": 1, "size": 16},
  {"name": "labels", "type": "labels"},
  {"name": "conv1a", "type": "conv", "inputs": ["data"], "filters": 6, "size": 3, "padding": 1, "neuron": "relu", "init": "kaiming", "device": 0},
  {"name": "pool1a", "type": "pool", "inputs": ["conv1a"], "size": 3, "stride": 2, "device": 0},
  {"name": "conv1b", "type": "conv", "inputs": ["data"], "filters": 6, "size": 3, "padding": 1, "neuron": "relu", "init": "kaiming", "device": 1},
  {"name": "pool1b", "type": "pool", "inputs": ["conv1b"], "size": 3, "stride": 2, "device": 1},
  {"name": "fc2a", "type": "fc", "inputs": ["pool1a", "pool1b"], "outputs": 16, "neuron": "relu", "init": "kaiming", "device": 0},
  {"name": "drop2a", "type": "dropout", "inputs": ["fc2a"], "rate": 0.25, "device": 0},
  {"name": "fc2b", "type": "fc", "inputs": ["pool1a", "pool1b"], "outputs": 16, "neuron": "relu", "init": "kaiming", "device": 1},
  {"name": "drop2b", "type": "dropout", "inputs": ["fc2b"], "rate": 0.25, "device": 1},
  {"name": "fc3", "type": "fc", "inputs": ["drop2a", "drop2b"], "outputs": 4, "init": "xavier"},
  {"name": "cost", "type": "softmax_cost", "inputs": ["fc3", "labels"]}
]}
JSON
for dev in cpu cpu:0,cpu:1; do
  "$BIN" --layer-def "$WORK/towers.json" --data "$DATA" --batch 32 --epochs 2 --device "$dev" --threads 2 \
    --quiet --log "$WORK/towers-$dev.jsonl" --trace "$WORK/trace-$dev.json" > "$WORK/towers-$dev.txt"
done
set +e
"$BIN" --layer-def "$WORK/towers.json" --data "$DATA" --trace "$WORK/no/such/folder/t.json" > "$WORK/trace-err.txt" 2>&1
rc=$?
set -e
[ $rc = 2 ] && grep -q "which is not a folder" "$WORK/trace-err.txt" && ! grep -q "^1\.[0-9]*/" "$WORK/trace-err.txt" \
  || { cat "$WORK/trace-err.txt"; fail "a trace into a missing folder is not refused before training"; }
grep -q "2 lanes side by side: cpu:0, cpu:1 (1 thread(s) per CPU device)" "$WORK/towers-cpu:0,cpu:1.txt" \
  || fail "towers: the description does not say the devices run side by side"
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def log(dev):
    return [json.loads(l) for l in open(f"{work}/towers-{dev}.jsonl")]
one, two = log("cpu"), log("cpu:0,cpu:1")
costs = lambda ev: [e["cost"] for e in ev if e["event"] == "batch"]
assert len(costs(one)) == 16 and costs(one) == costs(two), (costs(one), costs(two))
tests = lambda ev: [e["test_cost"] for e in ev if e["event"] == "epoch"]
assert tests(one) == tests(two), (tests(one), tests(two))
assert [e for e in two if e["event"] == "trace"][0]["steps"] == 3
events = json.load(open(f"{work}/trace-cpu:0,cpu:1.json"))["traceEvents"]
tracks = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
assert sorted(tracks.values()) == ["cpu:0", "cpu:1", "host"], tracks
spans = [e for e in events if e["ph"] == "X"]
by = lambda track, cat: [e["name"] for e in spans if tracks[e["tid"]] == track and e["cat"] == cat]
assert by("cpu:1", "forward").count("conv1b") == 3 and by("cpu:0", "backward").count("fc3") == 3
assert by("host", "step").count("forward + backward") == 3 and by("host", "step").count("update") == 3
assert "gradient from fc2b" in by("cpu:0", "copy"), by("cpu:0", "copy")
PY

# Colour: random crops, reflections, PCA colour noise, the mean image; 10 classes (chance 0.1).
python3 "$SRC/scripts/make_shapes.py" "$WORK/shapes" --train 2000 --val 300
cat > "$WORK/colour.json" <<'JSON'
{"layers": [
  {"name": "data", "type": "input", "channels": 3, "size": 28},
  {"name": "labels", "type": "labels"},
  {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 32, "size": 5, "padding": 2, "neuron": "relu", "init": "kaiming"},
  {"name": "pool1", "type": "pool", "inputs": ["conv1"], "size": 3, "stride": 2},
  {"name": "rnorm1", "type": "lrn", "inputs": ["pool1"]},
  {"name": "conv2", "type": "conv", "inputs": ["rnorm1"], "filters": 64, "size": 5, "padding": 2, "neuron": "relu", "init": "kaiming"},
  {"name": "pool2", "type": "pool", "inputs": ["conv2"], "size": 3, "stride": 2},
  {"name": "fc3", "type": "fc", "inputs": ["pool2"], "outputs": 10, "init": "xavier"},
  {"name": "cost", "type": "softmax_cost", "inputs": ["fc3", "labels"]}
]}
JSON
"$BIN" --layer-def "$WORK/colour.json" --data-path "$WORK/shapes" --image-size 32 --crop 28 --mirror \
  --pca-std 0.1 --mean image --epochs 8 --mini 64 --print-freq 1000 --multiview-test > "$WORK/out3.txt"
cat "$WORK/out3.txt"
acc=$(sed -n 's/^done:.*test accuracy \([0-9.]*\).*/\1/p' "$WORK/out3.txt")
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "colour: test accuracy '$acc' is not above 0.5 (chance 0.1)"
acc10=$(sed -n 's/^10-view test on 300 images:.*(accuracy \([0-9.]*\)).*/\1/p' "$WORK/out3.txt")
awk -v a="$acc10" 'BEGIN { exit !(a > 0.5) }' || fail "colour: 10-view accuracy '$acc10' is not above 0.5"
echo "convnet-train: all checks passed"
