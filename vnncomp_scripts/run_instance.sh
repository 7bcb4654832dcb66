#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes sat (with counterexample) / unsat / timeout / unknown / error to
# RESULTS_FILE.  The time budget passed to nnverify is TIMEOUT minus one second
# for interpreter start-up, so the file is always written before the harness
# deadline.
set -u
VERSION=${1:-}
BENCHMARK=${2:-}
ONNX=${3:-}
VNNLIB=${4:-}
RESULTS_FILE=${5:-}
TIMEOUT=${6:-}
if [ "$VERSION" != "v1" ] || [ -z "$RESULTS_FILE" ] || [ -z "$TIMEOUT" ]; then
    echo "usage: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
PYTHON=${PYTHON:-python3}
TOOL_DIR=$(cd "$(dirname "$0")/.." && pwd)
BUDGET=$(awk -v t="$TIMEOUT" 'BEGIN { b = t - 1; if (b < 1) b = 1; print b }')
PYTHONPATH="$TOOL_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m verifier run "$ONNX" "$VNNLIB" \
    --timeout "$BUDGET" --results-file "$RESULTS_FILE"
status=$?
# the verdict is in RESULTS_FILE; only a failure to produce one is an error here
if [ "$status" -ge 3 ]; then
    echo "run_instance.sh: $BENCHMARK: nnverify failed (exit $status)" >&2
    exit 1
fi
exit 0
