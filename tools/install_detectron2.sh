#!/usr/bin/env bash
# Makes detectron2 importable in the given Python environment, without network access beyond the package
# registries.
#
# If detectron2 already imports (e.g. built from source by the user), nothing is done. Otherwise the
# registry's `sal-detectron2` wheel (upstream detectron2's Python code, tagged for CPython 3.10 only) is
# repacked as a pure-Python wheel: its compiled `_C` extension is dropped (upstream makes `_C` optional and this
# project never needs it), its `numpy<2` pin and its formatter dependency are removed, and the result is
# installed with its remaining dependencies.
#
# With --wheel-dir, only the repacked wheel is written to DIR (nothing is installed): `make gpu-wheels`
# carries it to a GPU machine that has no registry (docs/gpu.md).
#
# Usage: tools/install_detectron2.sh PYTHON [--wheel-dir DIR]
set -euo pipefail
usage="usage: install_detectron2.sh PYTHON [--wheel-dir DIR]"
PY=${1:?$usage}
WHEEL_DIR=
if [ $# -gt 1 ]; then
  [ $# -eq 3 ] && [ "$2" = --wheel-dir ] || { echo "$usage" >&2; exit 2; }
  WHEEL_DIR=$3
fi
D2_WHEEL_SPEC=${D2_WHEEL_SPEC:-sal-detectron2==0.7.2}

found=$("$PY" -c "import importlib.util as u; s = u.find_spec('detectron2'); print(s.submodule_search_locations[0] if s else '')")
if [ -z "$WHEEL_DIR" ] && [ -n "$found" ]; then
  echo "detectron2 already installed at $found; leaving it as it is"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip install --quiet wheel
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.10 --platform linux_x86_64 \
  "$D2_WHEEL_SPEC" -d "$work/dl"
whl=$(ls "$work"/dl/*.whl)
"$PY" -m wheel unpack --dest "$work/unpacked" "$whl"
root=$(ls -d "$work"/unpacked/*)
distinfo=$(ls -d "$root"/*.dist-info)

rm -f "$root"/detectron2/_C*.so
sed -i '/_C\..*\.so/d' "$distinfo/RECORD"
sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' -e 's/^Tag: .*/Tag: py3-none-any/' "$distinfo/WHEEL"
sed -i -e '/^Requires-Dist: numpy/d' -e '/^Requires-Dist: black$/d' "$distinfo/METADATA"

mkdir -p "$work/packed"
"$PY" -m wheel pack --dest-dir "$work/packed" "$root"
if [ -n "$WHEEL_DIR" ]; then
  mkdir -p "$WHEEL_DIR"
  cp "$work"/packed/*.whl "$WHEEL_DIR"/
  echo "wrote $(basename "$work"/packed/*.whl) (repacked from $D2_WHEEL_SPEC) to $WHEEL_DIR"
  exit 0
fi
# detectron2 imports fvcore and iopath at import time but the wheel does not declare them.
"$PY" -m pip install --quiet "$work"/packed/*.whl fvcore iopath
"$PY" -c "import detectron2; print('installed detectron2', detectron2.__version__, 'from', '$D2_WHEEL_SPEC')"
