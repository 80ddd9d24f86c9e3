"""The inference network: a frozen teacher and a trained student, run as one batched call."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from schemas.manifest import Scoring
from worker.model.anomaly_map import anomaly_map, default_sigma, image_scores
from worker.model.backbones import backbone_spec, build_pyramid, build_teacher


class StudentTeacher(nn.Module):
    """Teacher and student feature pyramids of one backbone, plus input normalisation.

    Input is a uint8 or float batch in [0, 255], (N, 3, H, W) RGB; normalisation lives
    inside the network so that every caller (trainer, worker, benchmark) feeds the
    same thing and a manifest cannot disagree with the weights.
    """

    def __init__(
        self, backbone: str, teacher: nn.Module | None = None, scoring: Scoring | None = None
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        self.backbone = backbone
        self.scoring = scoring or Scoring()  # from the manifest: how maps and scores are made
        self.teacher = teacher if teacher is not None else build_pyramid(backbone)
        self.student = build_pyramid(backbone)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @classmethod
    def pretrained(cls, backbone: str, teacher_weights: Path | None = None) -> StudentTeacher:
        """A new pair: ImageNet teacher (verified weights), random student."""
        return cls(backbone, teacher=build_teacher(backbone, teacher_weights))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def teacher_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.teacher.eval()
        with torch.no_grad():
            return list(self.teacher(x))

    def student_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.student(x))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps (N, H, W) at input resolution and image scores (N,)."""
        x = self.normalise(images)
        teacher, student = self.teacher_features(x), self.student_features(x)
        # The map is a sum of small differences: compute it in fp32 even when the
        # networks ran under bf16/fp16 autocast.
        with torch.autocast(device_type=images.device.type, enabled=False):
            maps = anomaly_map(
                teacher,
                student,
                out_size=tuple(images.shape[-2:]),
                sigma=default_sigma(images.shape[-1]),
                scoring=self.scoring,
            )
        return maps, image_scores(maps, self.scoring)
