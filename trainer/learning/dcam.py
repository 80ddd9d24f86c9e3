"""DCAM: distributed convolutional attention on the student's feature maps (training only).

One CBAM-style block per pyramid scale (docs/method.md). The blocks reweight the
student's channels and/or pixels before the distillation loss, so the student can
spend its capacity on what matters for each product instead of compromising
between products ("cross-class interference"). At inference they are dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from model.network import StudentTeacher
from trainer.learning.config import AttentionKind


class ChannelAttention(nn.Module):
    """Average- and max-pooled channel descriptors through a shared MLP, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """Per-pixel channel mean and max through a 7x7 convolution, sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def attention_block(kind: AttentionKind, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "channel":
        return ChannelAttention(channels)
    if kind == "spatial":
        return SpatialAttention()
    if kind == "both":  # CBAM order: channel first, then spatial
        return nn.Sequential(ChannelAttention(channels), SpatialAttention())
    raise ValueError(f"unknown DCAM kind {kind!r}")


class DCAM(nn.Module):
    """One attention block per scale of the student pyramid."""

    def __init__(self, kind: AttentionKind, channels: list[int]) -> None:
        super().__init__()
        self.kind = kind
        self.blocks = nn.ModuleList(attention_block(kind, c) for c in channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [block(f) for block, f in zip(self.blocks, features, strict=True)]


class AttendedStudentTeacher(StudentTeacher):
    """The pair with DCAM KEPT at inference: the map compares teacher and attended student.

    An experiment for the ablation (docs/method.md leaves open whether keeping the
    blocks helps); the worker serves plain pairs, so this lives with training.
    """

    def __init__(self, network: StudentTeacher, dcam: DCAM) -> None:
        super().__init__(network.backbone, teacher=network.teacher)
        self.student = network.student
        self.dcam = dcam

    def student_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.dcam(super().student_features(x))
