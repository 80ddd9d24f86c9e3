#!/usr/bin/env bash
# kenpin's model path beside anomalib's shipped inferencer, in one session, alternating
# rounds so that a machine getting busier or quieter affects both alike.
#
#   deploy/benchmarks/versus_anomalib.sh MODEL_ARTIFACT [ROUNDS] [SECONDS]
#
# Needs .venv-anomalib (deploy/benchmarks/anomalib_venv.sh). kenpin is measured through
# every runtime at batch 1 and 16 (`kenpin-trainer bench`), anomalib at batch 1 (its
# TorchInferencer serves one image at a time) and through its OpenVINO export at batch 1 and 16.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ]; then
    echo "usage: $0 MODEL_ARTIFACT [ROUNDS] [SECONDS]" >&2
    exit 2
fi
MODEL=$1 ROUNDS=${2:-2} SECONDS_EACH=${3:-20}
for round in $(seq 1 "$ROUNDS"); do
    echo "## round $round"
    .venv-anomalib/bin/python deploy/benchmarks/anomalib_baseline.py --seconds "$SECONDS_EACH" --openvino \
        2>/dev/null
    .venv/bin/kenpin-trainer bench --model "$MODEL" --seconds "$SECONDS_EACH" --rounds 1 \
        --runtime torch:fp32 --runtime torch:bf16 --runtime onnxruntime:fp32 \
        --runtime openvino:fp32 --runtime openvino:bf16 2>/dev/null
done
