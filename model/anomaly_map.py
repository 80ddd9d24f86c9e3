"""From teacher/student feature pyramids to a per-pixel anomaly map and an image score."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.judgement import Judgement
from schemas.manifest import Scoring

DEFAULT_SCORING = Scoring()


def gaussian_kernel1d(sigma: float, device: torch.device) -> torch.Tensor:
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (N, 1, H, W) maps with reflect padding."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, maps.device)
    pad = kernel.numel() // 2
    out = F.pad(maps, (pad, pad, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def anomaly_map(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    out_size: tuple[int, int],
    sigma: float = 4.0,
    scoring: Scoring = DEFAULT_SCORING,
) -> torch.Tensor:
    """Per-pixel anomaly map, (N, H, W) float32.

    At every chosen scale: 1 - cosine(teacher, student) over channels, after an
    optional k x k local average of both feature maps (a defect a few pixels wide
    changes a neighbourhood's mean feature; one noisy position does not), plus
    the plain distance when `scoring.plus_unpooled`; each
    upsampled bilinearly to `out_size` and SUMMED over scales (the method's rule;
    STFPM multiplies, which lets one blind scale veto the others), then
    Gaussian-smoothed.
    """
    total: torch.Tensor | None = None
    for level in scoring.scales:
        t, s = teacher[level].float(), student[level].float()
        distance = torch.zeros_like(t[:, :1])
        if scoring.feature_pool == 1 or scoring.plus_unpooled:
            distance = distance + 1.0 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)
        if scoring.feature_pool > 1:
            k = scoring.feature_pool
            t = F.avg_pool2d(t, k, stride=1, padding=k // 2, count_include_pad=False)
            s = F.avg_pool2d(s, k, stride=1, padding=k // 2, count_include_pad=False)
            distance = distance + 1.0 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)
        distance = F.interpolate(distance, size=out_size, mode="bilinear", align_corners=False)
        total = distance if total is None else total + distance
    assert total is not None, "empty feature pyramid"
    return gaussian_blur(total, sigma).squeeze(1)


def image_scores(maps: torch.Tensor, scoring: Scoring = DEFAULT_SCORING) -> torch.Tensor:
    """Image score: the maximum of the map, or the mean of its top `scoring.top_fraction`."""
    flat = maps.flatten(1)
    if scoring.top_fraction <= 0:
        return flat.amax(dim=1)
    # a plain int even while the ONNX exporter traces (the map's size is fixed per release)
    k = max(1, round(int(maps.shape[-2]) * int(maps.shape[-1]) * scoring.top_fraction))
    return flat.topk(k, dim=1).values.mean(dim=1)


def score_pyramids(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    out_size: tuple[int, int],
    scoring: Scoring = DEFAULT_SCORING,
) -> Judgement[torch.Tensor]:
    """Image scores (N,) and anomaly maps (N, H, W): the one scoring path.

    The trainer's validation and checkpoint rule and the sweep's scoring variants
    call this, and the served network its two halves (`pyramid_maps`, then
    `image_scores`, with the memory head's map added between them when it has one),
    so a number measured while training is the number the line will see. Computed in
    fp32 even when the networks ran under autocast: the map is a sum of small differences.
    """
    maps = pyramid_maps(teacher, student, out_size, scoring)
    return Judgement(scores=image_scores(maps, scoring), maps=maps)


def pyramid_maps(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    out_size: tuple[int, int],
    scoring: Scoring = DEFAULT_SCORING,
) -> torch.Tensor:
    """`score_pyramids`' maps alone, in fp32 whatever autocast says: for a caller that adds
    to the map before its image score is taken (the memory head, `model.network`)."""
    with torch.autocast(device_type=teacher[0].device.type, enabled=False):
        return anomaly_map(teacher, student, out_size, default_sigma(out_size[-1]), scoring)


def default_sigma(image_size: int) -> float:
    """Smoothing that scales with resolution: sigma 4 at 256 px, as common for this family."""
    return 4.0 * image_size / 256.0
