#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on one CUDA GPU, in about 8 minutes, the CUDA tests and the rest of
# the test suite; DSLA against detectron2's FCOS (R-50-FPN, 800x1333, training at batch 2, 8 and 16
# in float32 and under fp16 and bf16 autocast, inference at batch 1); the label assignment at 10 to
# 3000 boxes per image; a profile of a 16-image training step and its host-device synchronizations;
# and the quick start for a fixed number of iterations. Each step has its own time budget. Written
# to OUTDIR (six files):
#   summary.md, summary.json  every figure, and each target marked pass or fail
#   gpu_check.log             the steps, the machine and the versions
#   tests.log, benchmark.log, quickstart.log
#
# The environment: the repository's .venv (`make install`) if there is one; otherwise python3 with
# the wheels of `make gpu-wheels` (.whl) installed, without network, into a folder put on
# PYTHONPATH after the tree's projects/DSLA. Without a CUDA device the script says so and exits 2 before it runs anything else.
# It exits 1 if a step failed or ran out of time, 0 otherwise (a missed target is a result, in the
# summary, not a failure of the check).
#
# Usage: bash tools/gpu_check.sh OUTDIR
# Environment (all optional): PYTHON (the interpreter), WHEELS (default .whl), GPU_CHECK_SITE (where
# the wheels are installed, default /tmp/dsla-gpu-site), QUICKSTART_ITERS (default 500), REPS
# (timed runs per benchmark case, default 5), and BUDGET_SETUP, BUDGET_TESTS_CUDA, BUDGET_TESTS,
# BUDGET_AMP, BUDGET_ASSIGNMENT, BUDGET_STEP, BUDGET_QUICKSTART (seconds; defaults below).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: bash tools/gpu_check.sh OUTDIR" >&2
  exit 2
fi
case $1 in
  /*) OUTDIR=$1 ;;
  *) OUTDIR=$PWD/$1 ;;
esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi

# Before anything else: without a CUDA device there is nothing to check.
if ! gpu=$("$PY" -c '
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"{sys.executable} cannot import torch ({e})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
print(torch.cuda.get_device_name(0))
' 2>&1); then
  echo "gpu_check: no CUDA device: $(tail -n 1 <<<"$gpu")." >&2
  echo "gpu_check: this check needs an NVIDIA GPU (docs/gpu.md); nothing was run." >&2
  exit 2
fi
gpu=$(tail -n 1 <<<"$gpu")

WHEELS=${WHEELS:-$REPO/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/dsla-gpu-site}
QUICKSTART_ITERS=${QUICKSTART_ITERS:-500}
REPS=${REPS:-5}
# 450 s together, so that the whole check fits in 8 minutes.
BUDGET_SETUP=${BUDGET_SETUP:-30}
BUDGET_TESTS_CUDA=${BUDGET_TESTS_CUDA:-45}
BUDGET_TESTS=${BUDGET_TESTS:-85}
BUDGET_AMP=${BUDGET_AMP:-90}
BUDGET_ASSIGNMENT=${BUDGET_ASSIGNMENT:-60}
BUDGET_STEP=${BUDGET_STEP:-45}
BUDGET_QUICKSTART=${BUDGET_QUICKSTART:-95}

mkdir -p "$OUTDIR"
WORK=$(mktemp -d -t dsla-gpu-check.XXXXXX)
LOG=$OUTDIR/gpu_check.log
: >"$LOG"
export PYTHONUNBUFFERED=1
failed=0

# step NAME BUDGET LOGFILE COMMAND...: runs COMMAND within BUDGET seconds, output to LOGFILE, and
# records its exit status and time in steps.tsv for the summary.
step() {
  local name=$1 budget=$2 log=$3 start=$SECONDS rc=0
  shift 3
  echo "== $name (budget ${budget} s): $*" | tee -a "$LOG"
  [ "$log" = "$LOG" ] || echo "== $name: $*" >>"$log"
  timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1 || rc=$?
  local took=$((SECONDS - start)) note=
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$took" "$budget" >>"$WORK/steps.tsv"
  if [ "$rc" -ne 0 ]; then
    failed=1
    note=" (failed)"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note=" (time budget reached)"; fi
  fi
  echo "   $name: exit $rc after ${took} s$note" | tee -a "$LOG"
  return "$rc"
}

summarize() {
  "$PY" tools/gpu_summary.py --work "$WORK" --output "$OUTDIR" \
    --quickstart-iters "$QUICKSTART_ITERS" || failed=1
  echo "gpu_check: $SECONDS s in all; summary in $OUTDIR/summary.md; work files in $WORK" \
    | tee -a "$LOG"
}

# The environment: the wheels installed (where no .venv is used) and the imports checked. Run by
# `step` through `bash -c`, hence exported.
setup() {
  set -euo pipefail
  if [ -n "$USE_WHEELS" ]; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl
  fi
  "$PY" - <<'PYTHON'
import importlib.metadata as md
import platform

import detectron2
import torch

import dsla  # checks detectron2's version

print(
    f"python {platform.python_version()} | torch {torch.__version__} | CUDA {torch.version.cuda}"
    f" | cuDNN {torch.backends.cudnn.version()} | {torch.cuda.get_device_name(0)}"
)
print(
    f"  TF32: convolutions {torch.backends.cudnn.allow_tf32}, matrix products "
    f"{torch.backends.cuda.matmul.allow_tf32}; cuDNN autotuning {torch.backends.cudnn.benchmark}"
)
print(f"  dsla from {dsla.__file__}\n  detectron2 from {detectron2.__file__}")
for name in (
    "torchvision numpy sal-detectron2 dsla-detectron2 fvcore iopath pycocotools timm "
    "opencv-python-headless onnx onnxruntime pytest pytest-timeout pytest-xdist hypothesis "
    "setuptools"
).split():
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
PYTHON
}

USE_WHEELS=
if [ "$PY" != .venv/bin/python ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  USE_WHEELS=1
  # The tree's own code first, as the editable install of `make install` has it (the suite checks
  # that layout); the project's wheel below it supplies its installed metadata.
  export PYTHONPATH=$REPO/projects/DSLA:$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PY WHEELS SITE USE_WHEELS
export -f setup

echo "gpu_check: $gpu; python: $PY${USE_WHEELS:+ with the wheels of $WHEELS}; output: $OUTDIR" \
  | tee -a "$LOG"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
    >>"$LOG" 2>&1 || true
fi
if ! step setup "$BUDGET_SETUP" "$LOG" bash -c setup; then
  echo "gpu_check: the environment is not usable (see $LOG); nothing else was run." | tee -a "$LOG"
  summarize
  exit 1
fi

# The tests: those whose names mention CUDA first, then the rest, stopping at the first failure.
pytest=("$PY" -m pytest -x -q -p no:cacheprovider)
step tests-cuda "$BUDGET_TESTS_CUDA" "$OUTDIR/tests.log" "${pytest[@]}" -k cuda \
  --timeout "$BUDGET_TESTS_CUDA" --junitxml "$WORK/tests_cuda.xml" || true
rest=(-k "not cuda" --timeout "$BUDGET_TESTS" --junitxml "$WORK/tests.xml")
if "$PY" -c "import xdist" 2>/dev/null; then
  rest+=(-n 8)
fi
# Ends the session between tests before the budget runs out, so that the report is written.
if "$PY" -c "
import importlib.metadata as md, sys
sys.exit(tuple(map(int, md.version('pytest-timeout').split('.')[:2])) < (2, 3))"; then
  rest+=(--session-timeout $((BUDGET_TESTS - 15)))
fi
step tests "$BUDGET_TESTS" "$OUTDIR/tests.log" "${pytest[@]}" "${rest[@]}" || true

# The benchmark, one part per step so that each keeps its own budget.
bench=("$PY" tools/benchmark.py --devices cuda --reps "$REPS" --sizes 800x1333)
step benchmark-amp "$BUDGET_AMP" "$OUTDIR/benchmark.log" "${bench[@]}" --parts amp \
  --batch-sizes 2 8 16 --inference-batch-sizes 1 --amp-dtypes fp32 fp16 bf16 \
  --output "$WORK/bench_amp.json" || true
step benchmark-assignment "$BUDGET_ASSIGNMENT" "$OUTDIR/benchmark.log" "${bench[@]}" \
  --parts assignment --assignment-size 800x1333 --assignment-batch 16 \
  --box-counts 10 100 1000 3000 --output "$WORK/bench_assignment.json" || true
step benchmark-step "$BUDGET_STEP" "$OUTDIR/benchmark.log" "${bench[@]}" --parts step \
  --step-batch 16 --output "$WORK/bench_step.json" || true

step quickstart "$BUDGET_QUICKSTART" "$OUTDIR/quickstart.log" \
  env DSLA_SHAPES_ROOT="$WORK/shapes" "$PY" tools/quickstart.py --device cuda \
  --output "$WORK/quickstart" --num-vis 4 SOLVER.MAX_ITER "$QUICKSTART_ITERS" \
  DATALOADER.NUM_WORKERS 4 || true

summarize
exit "$failed"
