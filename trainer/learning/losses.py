"""Distillation losses between teacher and (attended) student pyramids (docs/method.md).

Each term is computed per scale and summed over the three scales; the mix is a
weighted sum so the paper's variants are a matter of configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.learning.config import LossWeights


def channel_cosine_distance(
    t: torch.Tensor, s: torch.Tensor, hard_fraction: float = 0.0
) -> torch.Tensor:
    """1 - cosine over channels at every pixel, averaged over pixels and batch.

    With `hard_fraction` > 0 only that largest fraction of the per-pixel distances
    is averaged (EfficientAD's hard-feature loss): the student stops polishing
    what it already imitates well, which is also what lets it generalise to
    defects, and spends its capacity on the hardest normal patterns.
    """
    distance = 1.0 - F.cosine_similarity(t, s, dim=1)
    if hard_fraction <= 0:
        return distance.mean()
    flat = distance.flatten()
    k = max(1, round(flat.numel() * hard_fraction))
    return flat.topk(k).values.mean()


def spatial_cosine_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1 - cosine over the flattened H*W map of every channel, averaged."""
    return (1.0 - F.cosine_similarity(t.flatten(2), s.flatten(2), dim=2)).mean()


def spatial_kl(t: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of each channel's softmax over H*W positions.

    Summed over channels, averaged over the batch; scaled by T^2 so the gradient
    size does not depend on the temperature (Hinton et al.).
    """
    log_p_t = F.log_softmax(t.flatten(2).float() / temperature, dim=2)
    log_p_s = F.log_softmax(s.flatten(2).float() / temperature, dim=2)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=2)  # (N, C)
    return kl.sum(dim=1).mean() * temperature**2


def channel_kl(t: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of each pixel's softmax over channels, averaged over pixels."""
    log_p_t = F.log_softmax(t.float() / temperature, dim=1)
    log_p_s = F.log_softmax(s.float() / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean() * temperature**2


TERMS = {
    "channel_cd": lambda t, s, w: channel_cosine_distance(t, s, w.hard_fraction),
    "spatial_cd": lambda t, s, w: spatial_cosine_distance(t, s),
    "spatial_kd": lambda t, s, w: spatial_kl(t, s, w.temperature),
    "channel_kd": lambda t, s, w: channel_kl(t, s, w.temperature),
}


def distillation_loss(
    teacher: list[torch.Tensor], student: list[torch.Tensor], weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over scales and terms; also each term's value, for the progress bar."""
    active = {name: getattr(weights, name) for name in TERMS if getattr(weights, name)}
    if not active:
        raise ValueError("every loss weight is zero: nothing to train")
    terms: dict[str, torch.Tensor] = {}
    for t, s in zip(teacher, student, strict=True):
        t, s = t.float(), s.float()
        for name, weight in active.items():
            value = weight * TERMS[name](t, s, weights)
            terms[name] = value if name not in terms else terms[name] + value
    total = sum(terms.values())
    return total, {name: float(v.detach()) for name, v in terms.items()}
