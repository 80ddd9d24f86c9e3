"""The openvino runtime: a release's ONNX export compiled by OpenVINO for the CPU.

`bf16` sets OpenVINO's inference precision hint, which runs the convolutions on
AMX / AVX512-BF16 units where the CPU has them (and falls back to f32 where it
has not); `fp32` pins f32, which OpenVINO would otherwise replace by bf16 on
such CPUs by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoEngine:
    """`path` (an ONNX export, sha256 checked by the caller) compiled for OpenVINO's CPU plugin."""

    runtime = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", threads: int = 0) -> None:
        self.precision = precision
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, all cores on it
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.request.infer({0: np.ascontiguousarray(frames, np.uint8)})
        scores = np.asarray(result[self.compiled.output(0)], np.float32).copy()
        maps = np.asarray(result[self.compiled.output(1)], np.float32).copy()
        return scores, maps
