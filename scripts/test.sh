#!/usr/bin/env bash
# Builds everything and runs every test: the C++ suites (CMake + ctest) and the Python suites
# (pip install . + pytest). GPU tests skip, saying so, where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

echo "== C++: configure, build, ctest"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/ci -j "$JOBS"
ctest --test-dir build/ci --output-on-failure -j "$JOBS"

echo "== Python: pip install . and pytest"
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-build-isolation .
# Run from tests/ so that `import convnet` finds the installed package, not the source tree.
cd tests && "$PYTHON" -m pytest -q python
