#!/usr/bin/env bash
# The GPU measurement: every GPU runtime at batch 1, 16, 64, 256 and the whole Kafka path
# with the local stack, written to ONE JSON file. Installs nothing: it runs what the
# project's virtualenv has (a runtime that is missing is listed as not measured).
# Without CUDA it does a short CPU dry run and says so (JSON "dry_run": true).
#
#   deploy/benchmarks/gpu.sh OUT.json [MODEL_ARTIFACT [DATASET_ROOT]]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT.json [MODEL_ARTIFACT [DATASET_ROOT]]" >&2
    exit 2
fi
PYTHON=${PYTHON:-.venv/bin/python}
export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1  # nothing is fetched from outside during a run
args=(--out "$1")
if [ $# -ge 2 ]; then args+=(--model "$2"); fi
if [ $# -ge 3 ]; then args+=(--source "$3"); fi
exec "$PYTHON" -m deploy.benchmarks.gpu "${args[@]}"
