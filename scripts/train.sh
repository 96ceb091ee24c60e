#!/usr/bin/env bash
# The default job: installs what is needed, builds and installs convnet (pip install .), then
# trains the AlexNet-style model for 28x28 images on Fashion-MNIST (on the GPU when there is one,
# else the CPU), with progress; checkpoints, log and plots go to runs/fashion. Run it again and
# it continues (or reports) that run; extra arguments go to `convnet train`, e.g.
# `bash scripts/train.sh --epochs 5 --overwrite`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
PYTHON=${PYTHON:-python3}
echo "== building and installing convnet (pip install .)"
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-build-isolation .
ROOT=$(pwd)
# From /tmp, so that `import convnet` finds the installed package, not the source tree.
cd /tmp && exec "$PYTHON" -m convnet.demo --save-dir "$ROOT/runs/fashion" "$@"
