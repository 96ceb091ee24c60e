#!/usr/bin/env bash
# Run HERE, on a machine with internet, before a GPU session: puts into .whl/ (git-ignored; the
# device tool's run carries it with carry=[".whl"]) what the lent GPU machine lacks and cannot
# fetch (it has no internet and no apt) for scripts/gpu-check.sh:
#   - the scipy-openblas32 wheel  (the CPU BLAS; CMake's CONVNET_BLAS=AUTO takes it)
#   - the nlohmann-json wheel     (the JSON headers, when the system has none)
#   - the importlib-resources wheel (nlohmann_json/__init__.py imports it, and CMake finds the
#                                  headers by importing nlohmann_json; not in the GPU image)
#   - googletest-src.tar.gz       (GoogleTest's sources from this machine's /usr/src/googletest,
#                                  Debian's `googletest` package; gpu-check.sh builds it there
#                                  when the image has no GoogleTest, so that ctest has tests)
# The wheels are fetched for the device image's Python (PYVER, default 3.12: the image's python3
# is CPython 3.12.3) and x86-64 manylinux. Pin versions with SCIPY_OPENBLAS32_VERSION,
# NLOHMANN_JSON_VERSION and IMPORTLIB_RESOURCES_VERSION (default: the newest). One version of
# each is kept: older ones are removed.
#
#   bash scripts/fetch-gpu-wheels.sh            # into .whl/
#   WHL_DIR=/tmp/whl bash scripts/fetch-gpu-wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER=${PYVER:-3.12}
DEST=${WHL_DIR:-.whl}
PYTHON=${PYTHON:-python3}
spec() { if [ -n "${2:-}" ]; then echo "$1==$2"; else echo "$1"; fi; }
PACKAGES=("$(spec scipy-openblas32 "${SCIPY_OPENBLAS32_VERSION:-}")"
          "$(spec nlohmann-json "${NLOHMANN_JSON_VERSION:-}")"
          "$(spec importlib-resources "${IMPORTLIB_RESOURCES_VERSION:-}")")

mkdir -p "$DEST"
rm -f "$DEST"/scipy_openblas32-*.whl "$DEST"/nlohmann_json-*.whl "$DEST"/importlib_resources-*.whl
echo "[fetch-gpu-wheels] ${PACKAGES[*]} for CPython $PYVER, manylinux x86_64 -> $DEST/"
"$PYTHON" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${PACKAGES[@]}"

# GoogleTest sources (about 1 MB compressed); taken from this machine's Debian package.
GTEST_SRC=${GTEST_SRC:-/usr/src/googletest}
rm -f "$DEST/googletest-src.tar.gz"
if [ ! -f "$GTEST_SRC/CMakeLists.txt" ] && command -v apt-get >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download googletest >/dev/null 2>&1) && dpkg -x "$tmp"/googletest_*.deb "$tmp/x"; then
    GTEST_SRC="$tmp/x/usr/src/googletest"
  fi
fi
if [ -f "$GTEST_SRC/CMakeLists.txt" ]; then
  tar -czf "$DEST/googletest-src.tar.gz" -C "$(dirname "$GTEST_SRC")" "$(basename "$GTEST_SRC")"
else
  echo "[fetch-gpu-wheels] no GoogleTest sources here (apt-get install googletest): the GPU machine" \
       "will build no C++ tests unless its image has GoogleTest"
fi

echo "[fetch-gpu-wheels] $DEST now holds:"
ls -l "$DEST"
du -sh "$DEST"
n_blas=$(find "$DEST" -maxdepth 1 -name 'scipy_openblas32-*.whl' | wc -l)
n_json=$(find "$DEST" -maxdepth 1 -name 'nlohmann_json-*.whl' | wc -l)
n_res=$(find "$DEST" -maxdepth 1 -name 'importlib_resources-*.whl' | wc -l)
if [ "$n_blas" -ne 1 ] || [ "$n_json" -ne 1 ] || [ "$n_res" -ne 1 ]; then
  echo "[fetch-gpu-wheels] expected one wheel of each package, found $n_blas scipy-openblas32," \
       "$n_json nlohmann-json, $n_res importlib-resources" >&2
  exit 1
fi
if [ "$DEST" = ".whl" ] && ! grep -qsxE '/?\.whl/?' .gitignore .git/info/exclude; then
  echo "[fetch-gpu-wheels] WARNING: .whl/ is not git-ignored: add the line '/.whl/' to .gitignore," \
       "or it travels as untracked files and may be committed"
fi
echo "[fetch-gpu-wheels] on the device: bash scripts/gpu-check.sh, with carry=[\".whl\"]"
