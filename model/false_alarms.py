"""How many good parts a threshold flags: the split-conformal rule and its uncertainty.

Torch-free arithmetic shared by the trainer (thresholds from held-out normals),
the operations (thresholds proposed from a line's own normals) and the console
(which shows both). The rule: with n normal scores sorted, the threshold is the
k-th smallest, k = ceil((n + 1) * q) for the target quantile q (a part is
flagged above it). For a new normal part like the n, the chance it scores above
the k-th of n is exactly (n + 1 - k) / (n + 1) on average over calibration
sets, whatever the scores' distribution; the rate one calibration set delivers
is Beta(n + 1 - k, k) distributed. Few normals cannot promise a low rate: the
lowest promise of n is 1 / (n + 1), the threshold at their maximum.
"""

from __future__ import annotations

import math

import numpy as np

#: The interval stated beside an expected false-alarm rate.
CONFIDENCE = 0.95


def conformal_rank(n: int, quantile: float) -> int:
    """k = ceil((n + 1) * quantile), at most n: the rank of the threshold among n normals."""
    if n <= 0:
        raise ValueError("no normal scores to calibrate on")
    return max(1, min(n, math.ceil((n + 1) * quantile - 1e-9)))


def conformal_promise(n: int, k: int) -> tuple[float, tuple[float, float]]:
    """The expected false-alarm rate of the k-th smallest of n normals, and its 95 % interval."""
    above = n + 1 - k  # the rank from the top, counting the new part's place
    return above / (n + 1), beta_interval(above, k, CONFIDENCE)


def normals_needed(rate: float) -> int:
    """The fewest normals whose maximum promises `rate` false alarms: 1 / (n + 1) <= rate."""
    return max(1, math.ceil(1 / rate - 1 - 1e-9))


def rate_interval(flagged: int, parts: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson interval of a false-alarm rate measured as `flagged` of `parts`."""
    if parts <= 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if flagged == 0 else _beta_quantile(flagged, parts - flagged + 1, tail)
    high = 1.0 if flagged == parts else _beta_quantile(flagged + 1, parts - flagged, 1 - tail)
    return low, high


def beta_interval(a: int, b: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of Beta(a, b), for whole a, b >= 1.

    Computed from the binomial identity P(Beta(a, b) <= x) = P(Binomial(a+b-1, x) >= a),
    inverted by bisection: no statistics library needed for the two numbers.
    """
    tail = (1 - confidence) / 2
    return _beta_quantile(a, b, tail), _beta_quantile(a, b, 1 - tail)


def predicted_range(
    expected_rate: float, normals: int, parts: int, confidence: float = CONFIDENCE
) -> tuple[int, int]:
    """The central `confidence` range of false alarms among `parts` new normals.

    The rate is Beta-distributed (the calibration set's luck), the count binomial
    given the rate (the new parts' luck): a beta-binomial. For comparing a
    measured count on a test set with what a threshold calibrated on `normals`
    normals promises.
    """
    above = round(expected_rate * (normals + 1))
    pmf = _beta_binomial_pmf(parts, above, normals + 1 - above)
    cdf = np.cumsum(pmf)
    tail = (1 - confidence) / 2
    low = int(np.searchsorted(cdf, tail - 1e-12))
    high = int(np.searchsorted(cdf, 1 - tail - 1e-12))
    return low, min(high, parts)


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 11th, 152nd."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


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
