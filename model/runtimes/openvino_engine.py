"""The openvino runtime: a release's ONNX export compiled by OpenVINO for the CPU.

`bf16` sets OpenVINO's inference precision hint, which runs the convolutions on
AMX / AVX512-BF16 units where the CPU has them (and falls back to f32 where it
has not); `fp32` pins f32, which OpenVINO would otherwise replace by bf16 on
such CPUs by default.

A batch is judged as one request per frame, spread over OpenVINO's CPU streams
(its THROUGHPUT hint: each stream a few cores, as many streams as pay). These
networks are depthwise convolutions on small feature maps, which do not spread
well over many cores inside one request: measured side by side on a quiet 2-core
CPU with a Lite0 release, batch 16 as one request on both cores (the LATENCY hint)
ran 39-42 frames/s, as 16 one-frame requests over 2 streams 66 (and 95 in
`kenpin-trainer bench`, where this engine serves batch 1 at 48). The model is
compiled for exactly one frame (a static shape), which OpenVINO's CPU plugin
runs faster than a dynamic batch axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from model.judgement import Judgement

HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoEngine:
    """`path` (an ONNX export, sha256 checked by the caller) compiled for OpenVINO's CPU plugin.

    `streams` 0 lets OpenVINO choose the number of streams for this CPU; 1 runs
    every frame on all cores in turn (the LATENCY hint). One caller at a time, as the
    worker's loop calls it: a batch's results are gathered in the engine itself.
    """

    runtime = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", streams: int = 0) -> None:
        self.precision = precision
        core = ov.Core()
        model = core.read_model(str(path))
        frame_shape = [int(d.get_length()) for d in model.input(0).get_partial_shape()[1:]]
        model.reshape([1, *frame_shape])
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": HINTS[precision]}
        if streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        else:
            config["PERFORMANCE_HINT"] = "THROUGHPUT"
            if streams > 1:
                config["NUM_STREAMS"] = str(streams)
        self.compiled = core.compile_model(model, "CPU", config)
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self._queue.set_callback(self._collect)
        self._scores = np.zeros(0, np.float32)
        self._maps = np.zeros((0, *frame_shape[:2]), np.float32)

    def _collect(self, request: ov.InferRequest, index: int) -> None:
        """Copy one frame's outputs out of its request (OpenVINO reuses the buffers)."""
        self._scores[index] = request.get_tensor("scores").data[0]
        self._maps[index] = request.get_tensor("maps").data[0]

    def __call__(self, frames: np.ndarray) -> Judgement[np.ndarray]:
        frames = np.ascontiguousarray(frames, np.uint8)
        count = len(frames)
        self._scores = np.empty(count, np.float32)
        self._maps = np.empty((count, *frames.shape[1:3]), np.float32)
        for index in range(count):
            self._queue.start_async({0: frames[index : index + 1]}, userdata=index)
        self._queue.wait_all()
        return Judgement(scores=self._scores, maps=self._maps)
