"""Per-product decision thresholds from held-out normals, with the false-alarm rate they promise.

Rule (split-conformal, distribution-free): with the n held-out normal scores
sorted, a product's threshold is the k-th smallest, k = ceil((n + 1) * q) for
the target quantile q (default 0.99: a target of 1 % false alarms); a part is
flagged when it scores above it. For a new normal part judged like the held-out
ones (same line, same appearance), the chance it scores above the k-th of n is
exactly (n + 1 - k) / (n + 1) on average over calibration sets, whatever the
scores' distribution: that is the expected false-alarm rate the manifest states.
The rate one calibration set actually delivers varies around it: it is
Beta(n + 1 - k, k) distributed, and its central 95 % interval is recorded too.

Few normals cannot promise a low rate: with n held-out normals the lowest
promise is 1 / (n + 1) (the threshold at their maximum). When the target asks
for less, the threshold is the maximum and the manifest says what it promises
instead, so nobody reads "1 %" where 42 normals can only back 2.3 %.

The promise holds for normals like the held-out ones; parts that look otherwise
on the line (another batch of material, another light) are a shift no
calibration set can see: that is what recalibrating on the line's own normals
is for. Each product keeps its own threshold because scores are not comparable
across products (a textured tile is never as quiet as a bottle bottom).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from model.false_alarms import (
    CONFIDENCE,
    conformal_promise,
    conformal_rank,
    ordinal,
    predicted_range,
)
from schemas.manifest import ProductThreshold
from trainer.learning.config import DEFAULT_QUANTILE


def calibrate(
    normal_scores: Mapping[str, np.ndarray],
    quantile: float = DEFAULT_QUANTILE,
    per_product: Mapping[str, float] | None = None,
) -> dict[str, ProductThreshold]:
    """The threshold of every product from its held-out normal scores.

    `quantile`: 1 - the target false-alarm rate, for every product unless
    `per_product` names its own.
    """
    thresholds = {}
    for product, scores in normal_scores.items():
        target = (per_product or {}).get(product, quantile)
        if not 0.5 <= target <= 1.0:
            raise ValueError(f"{product}: the threshold quantile must lie in [0.5, 1]")
        thresholds[product] = conformal_threshold(np.asarray(scores, np.float64), target)
    return thresholds


def conformal_threshold(scores: np.ndarray, quantile: float) -> ProductThreshold:
    """The k-th smallest of `scores`, k = ceil((n + 1) * quantile) (at most n), and its promise."""
    n = int(scores.size)
    if n == 0:
        raise ValueError("no held-out normal images to calibrate on")
    k = conformal_rank(n, quantile)
    expected, interval = conformal_promise(n, k)
    rule = f"split-conformal: {ordinal(k)} smallest of {n} held-out normal image scores"
    if expected > 1 - quantile + 1e-12:
        rule += (
            f" (the maximum: {n} normals cannot promise {100 * (1 - quantile):.2g} % false "
            f"alarms, at best {100 * expected:.2g} %)"
        )
    return ProductThreshold(
        threshold=float(np.sort(scores)[k - 1]),
        rule=rule,
        normal_scores=n,
        target_false_alarm_rate=round(1 - quantile, 12),
        expected_false_alarm_rate=expected,
        false_alarm_interval=interval,
    )


def predicted_false_alarms(
    entry: ProductThreshold, parts: int, confidence: float = CONFIDENCE
) -> tuple[int, int]:
    """The central `confidence` range of false alarms among `parts` new normals (beta-binomial)."""
    if entry.expected_false_alarm_rate is None:
        raise ValueError("this threshold states no false-alarm rate (an older release)")
    return predicted_range(entry.expected_false_alarm_rate, entry.normal_scores, parts, confidence)
