#!/usr/bin/env bash
# The RetinaMNIST verdict on one GPU (issue 19 item 4): install, the CUDA tests, then the 5-fold
# cross-validated benchmark of recipes/retinamnist-gpu.yaml, its report and results in one folder.
#
#   bash studies/gpu_verdict.sh OUT_DIR                 # one CUDA GPU (sized for < 8 min on one H200)
#   DRY_RUN_CPU=1 bash studies/gpu_verdict.sh OUT_DIR   # the same stages on the CPU at smoke size
#
# OUT_DIR receives: install.log, tests.log, plan.txt (the --dry-run plan with time estimates),
# benchmark.log, results.json, report/ (report.md, report.html, figures/) and runs/ (the run folders;
# generator weights are left out of the copy kept beside them: they are large). RetinaMNIST comes from
# $ODMAUG_DATA_DIR when set, else is downloaded and md5-checked. Knobs (environment): PYTHON,
# SKIP_INSTALL=1 (use the installed package), BENCH_TIMEOUT (seconds, default 540).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash studies/gpu_verdict.sh OUT_DIR" >&2
    exit 2
fi
OUT_DIR=$(mkdir -p "$1" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
START=$(date +%s)
say() { echo "== $1 ($(( $(date +%s) - START )) s)"; }

RECIPE=recipes/retinamnist-gpu.yaml
ARGS=(--device cuda)
if [[ "${DRY_RUN_CPU:-0}" == "1" ]]; then
    # The smoke recipe through the same protocol: 2 folds, a few steps, 2 classifier epochs, on the CPU.
    RECIPE=recipes/smoke.yaml
    ARGS=(--device cpu --set benchmark.protocol=cv --set benchmark.cv.folds=2 --set "benchmark.seeds=[0, 1]"
          --set "benchmark.arms=[real, oversample, dm, odm]" --set classifier.epochs=2)
    echo "DRY_RUN_CPU=1: $RECIPE on the CPU, 2 folds (a check of this script, not a result)"
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "no CUDA device: skipped (DRY_RUN_CPU=1 runs the stages on the CPU)"
    exit 0
fi

if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
    say "install"
    "$PY" -m pip install -q -e ".[dev]" > "$OUT_DIR/install.log" 2>&1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee "$OUT_DIR/gpu.txt" || true

say "CUDA tests (pytest -k cuda; none collected is not an error)"
set +e
timeout 120 "$PY" -m pytest -q -k cuda -p no:cacheprovider > "$OUT_DIR/tests.log" 2>&1
rc=$?
set -e
tail -n 3 "$OUT_DIR/tests.log"
if [[ $rc -ne 0 && $rc -ne 5 ]]; then
    echo "CUDA tests failed (exit $rc): see $OUT_DIR/tests.log"; exit "$rc"
fi

RUNS="$OUT_DIR/runs"
say "plan"
"$PY" -m odmaug benchmark --recipe "$RECIPE" --runs-dir "$RUNS" "${ARGS[@]}" --dry-run > "$OUT_DIR/plan.txt" 2>&1
tail -n 4 "$OUT_DIR/plan.txt"

say "benchmark"
timeout "${BENCH_TIMEOUT:-540}" "$PY" -m odmaug benchmark --recipe "$RECIPE" --runs-dir "$RUNS" "${ARGS[@]}" \
    --quiet > "$OUT_DIR/benchmark.log" 2>&1 || { rc=$?; tail -n 20 "$OUT_DIR/benchmark.log"; exit "$rc"; }
BENCH=$(ls -d "$RUNS"/*-benchmark-* | tail -n 1)
cp "$BENCH/results.json" "$OUT_DIR/results.json"
rm -rf "$OUT_DIR/report" && cp -r "$BENCH/report" "$OUT_DIR/report"
find "$RUNS" -name '*.safetensors' -size +1M -delete  # weights stay out of the copied folder
say "done: $OUT_DIR/report/report.md"
