#!/usr/bin/env bash
# The default job: installs what is needed, builds and installs convnet (pip install .), then
# trains the AlexNet-style model for 28x28 images on Fashion-MNIST on the CPU, with progress.
# Extra arguments go to the trainer, e.g. `bash scripts/train.sh --epochs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
PYTHON=${PYTHON:-python3}
echo "== building and installing convnet (pip install .)"
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-build-isolation .
cd /tmp && exec "$PYTHON" -m convnet.demo "$@"
