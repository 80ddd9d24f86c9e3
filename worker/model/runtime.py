"""The served model: a verified artifact on a device, judging batches of RGB frames.

One code path serves the GPU (production) and the CPU (tests, small lines): the
device and the autocast precision are settings, not forks of the code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from schemas.manifest import ModelManifest
from worker.model.artifact import load_artifact
from worker.model.network import StudentTeacher

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized to (size, size): the one resize of every path.

    The worker prepares frames with it and the trainer prepares training,
    calibration and gate images with it, so both feed the network the same
    pixels. Area averaging when either side shrinks (no aliasing), bilinear when
    both grow.
    """
    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


@dataclass
class Judgement:
    """Scores (N,) and anomaly maps (N, S, S) of one batch, float32 on the host."""

    scores: np.ndarray
    maps: np.ndarray


class InspectionModel:
    """A StudentTeacher ready to serve: on its device, in eval mode, with its manifest."""

    def __init__(
        self,
        network: StudentTeacher,
        manifest: ModelManifest,
        device: str = "auto",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
        self.manifest = manifest
        self.device = resolve_device(device)
        self.precision = precision
        self.network = network.to(self.device).eval()
        self.network.to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, path: Path, device: str = "auto", precision: str = "fp32") -> InspectionModel:
        network, manifest = load_artifact(path)
        return cls(network, manifest, device=device, precision=precision)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    def threshold(self, product: str) -> float | None:
        entry = self.manifest.products.get(product)
        return None if entry is None else entry.threshold

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Resize an RGB uint8 frame to the model's input size (done in the decode threads)."""
        return fit_to_size(image, self.image_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def judge(self, frames: Sequence[np.ndarray]) -> Judgement:
        """Score a batch of prepared (S, S, 3) uint8 RGB frames in ONE forward pass."""
        batch = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2)
        with torch.inference_mode(), self._autocast():
            maps, scores = self.network(batch)
        return Judgement(scores=scores.float().cpu().numpy(), maps=maps.float().cpu().numpy())

    def warm_up(self, batch_size: int = 1) -> None:
        """Run a zero batch so the first real frame does not pay for lazy initialisation."""
        size = self.image_size
        self.judge([np.zeros((size, size, 3), np.uint8)] * batch_size)
