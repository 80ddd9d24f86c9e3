"""Per-product decision thresholds from held-out normal images.

Rule: the threshold of a product is the `quantile` (default 0.99, linear
interpolation) of the image scores of its held-out normal images, so about 1 % of
normal parts would be flagged if the held-out set is representative. The product
keeps its own threshold because scores are not comparable across products (a
textured tile is never as quiet as a bottle bottom).
"""

from __future__ import annotations

import numpy as np

from schemas.manifest import ProductThreshold
from trainer.learning.config import DEFAULT_QUANTILE


def calibrate(
    normal_scores: dict[str, np.ndarray], quantile: float = DEFAULT_QUANTILE
) -> dict[str, ProductThreshold]:
    if not 0.5 <= quantile <= 1.0:
        raise ValueError("the threshold quantile must lie in [0.5, 1]")
    thresholds = {}
    for product, scores in normal_scores.items():
        scores = np.asarray(scores, np.float64)
        if scores.size == 0:
            raise ValueError(f"{product}: no held-out normal images to calibrate on")
        thresholds[product] = ProductThreshold(
            threshold=float(np.quantile(scores, quantile)),
            rule=f"quantile {quantile} of held-out normal image scores",
            normal_scores=int(scores.size),
        )
    return thresholds
