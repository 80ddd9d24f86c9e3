"""The inference network: a frozen teacher and a trained student, run as one batched call.

Registered as the architecture `student_teacher` (`model.registry`): the
network of every release whose manifest names no other.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from model.anomaly_map import default_sigma, image_scores, pyramid_maps
from model.backbones import BACKBONES, backbone_spec, build_pyramid, build_teacher
from model.judgement import Judgement
from model.memory_head import memory_map
from model.registry import register
from schemas.manifest import MemoryHead, ModelManifest, Normalisation, Scoring


class StudentTeacher(nn.Module):
    """Teacher and student feature pyramids of one backbone, plus input normalisation.

    Input is a uint8 or float batch in [0, 255], (N, 3, H, W) RGB; normalisation lives
    inside the network so that every caller (trainer, worker, benchmark) feeds the
    same thing and a manifest cannot disagree with the weights.

    With a `memory_head` (`model.memory_head`), the served map is the
    student–teacher map fused with the teacher's nearest-neighbour map; the memory's
    rows and their weights are the buffers `memory` and `memory_weights`, saved with the
    network's weights.
    """

    def __init__(
        self,
        backbone: str,
        teacher: nn.Module | None = None,
        scoring: Scoring | None = None,
        normalisation: Normalisation | None = None,
        memory_head: MemoryHead | None = None,
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        if normalisation is None:
            normalisation = Normalisation(mean=spec.mean, std=spec.std)
        elif not _same(normalisation, spec.mean, spec.std):
            raise ValueError(
                f"normalisation mean {normalisation.mean} std {normalisation.std} is not "
                f"{backbone}'s (mean {spec.mean} std {spec.std}): the teacher's features "
                "would be computed on inputs it was not trained on"
            )
        self.backbone = backbone
        self.scoring = scoring or Scoring()  # from the manifest: how maps and scores are made
        self.teacher = teacher if teacher is not None else build_pyramid(backbone)
        self.student = build_pyramid(backbone)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        mean = torch.tensor(normalisation.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(normalisation.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.memory_head: MemoryHead | None = None
        if memory_head is not None:  # the rows come with the release's weights
            rows, channels = memory_head.patches, memory_head.channels
            self.set_memory(torch.zeros(rows, channels), torch.ones(rows), memory_head)

    def set_memory(self, memory: torch.Tensor, weights: torch.Tensor, head: MemoryHead) -> None:
        """Add the teacher's weighted nearest-neighbour map to the served map from now on."""
        if tuple(memory.shape) != (head.patches, head.channels) or weights.shape != (head.patches,):
            raise ValueError(
                f"memory {tuple(memory.shape)} and weights {tuple(weights.shape)} do not fit "
                f"a head of {head.patches} rows of {head.channels}"
            )
        self.register_buffer("memory", memory.float().contiguous())
        self.register_buffer("memory_weights", weights.float().contiguous())
        self.memory_head = head

    def drop_memory(self) -> None:
        """Serve the student–teacher map alone (as before `set_memory`)."""
        if self.memory_head is not None:
            del self.memory, self.memory_weights
            self.memory_head = None

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> StudentTeacher:
        """The pair a manifest describes (untrained: its release's weights go in next).

        ValueError for a manifest without a backbone kenpin knows, or whose
        normalisation is not the backbone's.
        """
        if manifest.backbone not in BACKBONES:
            raise ValueError(
                f"student_teacher needs a backbone, one of {sorted(BACKBONES)}; "
                f"the manifest names {manifest.backbone!r}"
            )
        return cls(
            manifest.backbone,
            scoring=manifest.scoring,
            normalisation=manifest.normalisation,
            memory_head=manifest.memory_head,
        )

    @classmethod
    def pretrained(cls, backbone: str, teacher_weights: Path | None = None) -> StudentTeacher:
        """A new pair: ImageNet teacher (verified weights), random student."""
        return cls(backbone, teacher=build_teacher(backbone, teacher_weights))

    def manifest_fields(self) -> dict[str, object]:
        """What a release of this network records about it: backbone, normalisation and
        its memory head, if it has one."""
        spec = backbone_spec(self.backbone)
        return {
            "backbone": self.backbone,
            "normalisation": Normalisation(mean=spec.mean, std=spec.std),
            "memory_head": self.memory_head,
        }

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def teacher_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.teacher.eval()
        with torch.no_grad():
            return list(self.teacher(x))

    def student_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.student(x))

    def forward(self, images: torch.Tensor) -> Judgement[torch.Tensor]:
        """Image scores (N,) and anomaly maps (N, H, W) at input resolution."""
        x = self.normalise(images)
        teacher, student = self.teacher_features(x), self.student_features(x)
        size = tuple(images.shape[-2:])
        maps = pyramid_maps(teacher, student, size, self.scoring)
        with torch.autocast(device_type=maps.device.type, enabled=False):
            if self.memory_head is not None:
                maps = maps + memory_map(
                    teacher,
                    self.memory,
                    self.memory_weights,
                    self.memory_head.stride,
                    size,
                    default_sigma(size[-1]),
                )
            return Judgement(scores=image_scores(maps, self.scoring), maps=maps)


@register("student_teacher", learner="trainer.learning.train:train")
def _build_student_teacher(manifest: ModelManifest) -> StudentTeacher:
    return StudentTeacher.from_manifest(manifest)


def _same(normalisation: Normalisation, mean: tuple, std: tuple) -> bool:
    pairs = [*zip(normalisation.mean, mean, strict=True), *zip(normalisation.std, std, strict=True)]
    return all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in pairs)
