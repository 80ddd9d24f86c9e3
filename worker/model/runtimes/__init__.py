"""Runtimes: what runs a release's network on the line, chosen by `KENPIN_RUNTIME`.

- `torch`: the network itself (`torch_engine`), on any device, fp32/bf16/fp16;
- `onnxruntime`: the release's `network.onnx` through ONNX Runtime (CPU, or the
  CUDA/TensorRT providers where they are installed);
- `openvino`: the same export through OpenVINO's CPU plugin (f32, or bf16 on CPUs
  with AMX/AVX512-BF16).

An engine takes a batch of prepared frames, (N, S, S, 3) uint8 RGB, and returns
image scores (N,) and anomaly maps (N, S, S), float32 on the host: the whole
scoring path, so the worker needs nothing else. The export is made when the
release is made (`trainer.learning.export`), listed in the manifest with its
sha256, and checked against torch fp32 before it is served (`worker.model.parity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

#: The runtimes a worker can be configured with.
RUNTIMES = ("torch", "onnxruntime", "openvino")
#: The ONNX export's name inside a release (beside the weights, listed in the manifest).
ONNX_FILE = "network.onnx"
#: Names of release files that are compiled exports, not tensors: verified by sha256
#: like every file, but read by a runtime rather than loaded as weights.
EXPORT_FILES = frozenset({ONNX_FILE})
#: Precisions each runtime accepts (torch: autocast; openvino: inference precision hint).
PRECISIONS = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "fp16"),
    "openvino": ("fp32", "bf16"),
}


class Engine(Protocol):
    """A compiled or eager network: uint8 frames in, (scores, maps) float32 out."""

    runtime: str
    precision: str

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_choice(runtime: str, precision: str) -> None:
    """ValueError unless `runtime` is known and runs at `precision`."""
    if runtime not in PRECISIONS:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, not {runtime!r}")
    if precision not in PRECISIONS[runtime]:
        raise ValueError(
            f"runtime {runtime} runs at {list(PRECISIONS[runtime])}, not {precision!r}"
        )


def open_export(runtime: str, path: Path, precision: str = "fp32", device: str = "auto") -> Engine:
    """An engine of `runtime` over the ONNX export at `path` (its sha256 already checked).

    The runtime's library is imported here, so a torch-only worker never loads it.
    """
    check_choice(runtime, precision)
    if runtime == "onnxruntime":
        from worker.model.runtimes.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, precision, device)
    if runtime == "openvino":
        from worker.model.runtimes.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision)
    raise ValueError(f"runtime {runtime!r} runs the network itself, not an export")
