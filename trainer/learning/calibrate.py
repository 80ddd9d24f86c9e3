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

import math
from collections.abc import Mapping

import numpy as np

from schemas.manifest import ProductThreshold
from trainer.learning.config import DEFAULT_QUANTILE

#: The interval recorded beside the expected false-alarm rate.
CONFIDENCE = 0.95


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
    k = min(n, math.ceil((n + 1) * quantile - 1e-9))
    ordered = np.sort(scores)
    above = n + 1 - k  # the rank from the top, counting the new part's place
    expected = above / (n + 1)
    low, high = beta_interval(above, k, CONFIDENCE)
    rule = f"split-conformal: {_ordinal(k)} smallest of {n} held-out normal image scores"
    if expected > 1 - quantile + 1e-12:
        rule += (
            f" (the maximum: {n} normals cannot promise {100 * (1 - quantile):.2g} % false "
            f"alarms, at best {100 * expected:.2g} %)"
        )
    return ProductThreshold(
        threshold=float(ordered[k - 1]),
        rule=rule,
        normal_scores=n,
        target_false_alarm_rate=round(1 - quantile, 12),
        expected_false_alarm_rate=expected,
        false_alarm_interval=(low, high),
    )


def beta_interval(a: int, b: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of Beta(a, b), for whole a, b >= 1.

    Computed from the binomial identity P(Beta(a, b) <= x) = P(Binomial(a+b-1, x) >= a),
    inverted by bisection: no statistics library needed for the two numbers.
    """
    tail = (1 - confidence) / 2
    return _beta_quantile(a, b, tail), _beta_quantile(a, b, 1 - tail)


def predicted_false_alarms(
    entry: ProductThreshold, parts: int, confidence: float = CONFIDENCE
) -> tuple[int, int]:
    """The central `confidence` range of false alarms among `parts` new normals.

    The rate is Beta-distributed (the calibration set's luck), the count binomial
    given the rate (the new parts' luck): a beta-binomial. For comparing a
    measured count on a test set with what the manifest promises.
    """
    if entry.expected_false_alarm_rate is None:
        raise ValueError("this threshold states no false-alarm rate (an older release)")
    n = entry.normal_scores
    above = round(entry.expected_false_alarm_rate * (n + 1))
    pmf = _beta_binomial_pmf(parts, above, n + 1 - above)
    cdf = np.cumsum(pmf)
    tail = (1 - confidence) / 2
    low = int(np.searchsorted(cdf, tail - 1e-12))
    high = int(np.searchsorted(cdf, 1 - tail - 1e-12))
    return low, min(high, parts)


def _beta_cdf(x: float, a: int, b: int) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    trials = a + b - 1
    log_x, log_y = math.log(x), math.log1p(-x)
    return sum(
        math.exp(_log_comb(trials, j) + j * log_x + (trials - j) * log_y)
        for j in range(a, trials + 1)
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _beta_quantile(a: int, b: int, p: float) -> float:
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if _beta_cdf(middle, a, b) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _beta_binomial_pmf(trials: int, a: int, b: int) -> np.ndarray:
    log_beta_ab = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    pmf = [
        math.exp(
            math.lgamma(trials + 1)
            - math.lgamma(j + 1)
            - math.lgamma(trials - j + 1)
            + math.lgamma(j + a)
            + math.lgamma(trials - j + b)
            - math.lgamma(trials + a + b)
            - log_beta_ab
        )
        for j in range(trials + 1)
    ]
    return np.asarray(pmf) / sum(pmf)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"
