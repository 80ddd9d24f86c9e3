"""Writing a network as ONNX: the whole scoring path, frames in, scores and maps out.

The export takes what the worker has after decoding, (N, S, S, 3) uint8 RGB, and
does everything after that inside the graph: layout, normalisation, both feature
pyramids, the anomaly map (upsampling and Gaussian smoothing included) and the
image score. Nothing is left to the caller, so a runtime cannot score
differently from the network by feeding it differently. The batch axis is
dynamic; the image size is the manifest's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from model.judgement import OUTPUT_NAMES, Judgement

#: ONNX opset written (supported by ONNX Runtime >= 1.12 and OpenVINO >= 2022.1).
OPSET = 17
#: The graph's input: a batch of prepared frames, (N, S, S, 3) uint8 RGB.
INPUT = "frames"


class _FromFrames(nn.Module):
    """(N, S, S, 3) uint8 -> `Judgement` (scores (N,), maps (N, S, S)): the engine's signature."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, frames: torch.Tensor) -> Judgement[torch.Tensor]:
        judged = self.network(frames.permute(0, 3, 1, 2))
        return Judgement(scores=judged.scores.float(), maps=judged.maps.float())


def export_onnx(network: nn.Module, image_size: int, path: Path) -> Path:
    """Write `network` (CPU, fp32, eval mode; left unchanged) as ONNX to `path`."""
    wrapped = _FromFrames(network).eval()
    example = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: it traces the eager network as served (timm's
        # dynamic "same" padding included), which torch.export cannot yet.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUT_NAMES)},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
