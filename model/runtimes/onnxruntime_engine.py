"""The onnxruntime runtime: a release's ONNX export through ONNX Runtime.

Providers are taken in order of speed from those installed: TensorRT, CUDA, then
the CPU. On the CPU the graph is fp32 (ORT has no bf16 CPU kernels for these
ops); `fp16` is TensorRT's fp16 mode and is refused without TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from model.judgement import OUTPUT_NAMES, Judgement
from model.runtimes.onnx_export import INPUT

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers(device: str = "auto") -> list[str | tuple[str, dict]]:
    """The providers a session on `device` uses, fastest first (CPU always last)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    chosen: list[str | tuple[str, dict]] = [p for p in _GPU_PROVIDERS if p in available]
    return [*chosen, "CPUExecutionProvider"]


class OnnxRuntimeEngine:
    """An inference session over `path` (an ONNX export; its sha256 was checked by the caller)."""

    runtime = "onnxruntime"

    def __init__(
        self, path: Path, precision: str = "fp32", device: str = "auto", threads: int = 0
    ) -> None:
        self.precision = precision
        chosen = providers(device)
        if precision == "fp16":
            if "TensorrtExecutionProvider" not in chosen:
                raise ValueError("onnxruntime fp16 needs the TensorRT provider, not installed here")
            chosen = [("TensorrtExecutionProvider", {"trt_fp16_enable": True}), *chosen[1:]]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per core
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers = self.session.get_providers()

    def __call__(self, frames: np.ndarray) -> Judgement[np.ndarray]:
        outputs = self.session.run(
            list(OUTPUT_NAMES), {INPUT: np.ascontiguousarray(frames, np.uint8)}
        )
        named = dict(zip(OUTPUT_NAMES, outputs, strict=True))
        return Judgement(**{name: np.asarray(out, np.float32) for name, out in named.items()})
