"""The teacher's nearest-neighbour memory: a second anomaly map, fused with the student's.

Why: the frozen teacher's own features separate the textured products' defects better
than the trained student's discrepancy does (a nearest-neighbour probe on the teacher,
`trainer.research.teacher_probe`); a small memory of normal teacher patches, queried
with the features the network computes anyway, brings that signal into the same map.
No product is needed at inference: the memory holds every product's patches, and a
patch's nearest row is one of its own product's (the products' features lie far apart);
each row carries its product's weight, so the distance is weighed as that product's.

Everything here is plain tensor algebra (matrix product, minimum, upsampling), so the
ONNX export and the compiled runtimes carry it like the rest of the scoring path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.anomaly_map import gaussian_blur

#: Pyramid levels whose features make a memory row: stride 8 and stride 16.
LEVELS = (1, 2)


def patch_features(teacher: list[torch.Tensor], stride: int) -> torch.Tensor:
    """(N, C, h, w) patch features on the `stride` grid: the teacher's stride-8 and
    stride-16 maps, each 3 × 3-averaged and L2-normalised over channels, concatenated.

    Stride 16 averages the stride-8 map 2 × 2 down; stride 8 upsamples the stride-16
    map bilinearly.
    """
    f8, f16 = (
        F.avg_pool2d(teacher[level].float(), 3, stride=1, padding=1, count_include_pad=False)
        for level in LEVELS
    )
    if stride == 16:
        f8 = F.avg_pool2d(f8, 2)
    else:
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([F.normalize(f8, dim=1), F.normalize(f16, dim=1)], dim=1)


def as_rows(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N * h * w, C): one row per patch."""
    return features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])


def nearest_distances(
    rows: torch.Tensor, memory: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Euclidean distance of each row to its nearest memory row, times that row's weight, (R,).

    As ||q||² − 2 q·m + ||m||²: one matrix product, which every runtime does fast
    (`torch.cdist` would not export as one).
    """
    squared, nearest = (
        rows.pow(2).sum(1, keepdim=True) - 2.0 * rows @ memory.T + memory.pow(2).sum(1)
    ).min(dim=1)
    return squared.clamp_min(0.0).sqrt() * weights[nearest]


def memory_map(
    teacher: list[torch.Tensor],
    memory: torch.Tensor,
    weights: torch.Tensor,
    stride: int,
    out_size: tuple[int, int],
    sigma: float,
) -> torch.Tensor:
    """(N, H, W): each patch's weighted distance to the memory, upsampled and smoothed like
    the student–teacher map, to which it is added."""
    features = patch_features(teacher, stride)
    n, _, h, w = features.shape
    distance = nearest_distances(as_rows(features), memory, weights).view(n, 1, h, w)
    distance = F.interpolate(distance, size=out_size, mode="bilinear", align_corners=False)
    return gaussian_blur(distance, sigma).squeeze(1)
