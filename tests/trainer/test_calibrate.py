import numpy as np
import pytest

from trainer.learning.calibrate import calibrate


def test_threshold_is_the_quantile_of_held_out_normal_scores():
    scores = {"bottle": np.arange(101, dtype=float), "tile": np.array([2.0, 4.0])}
    thresholds = calibrate(scores, quantile=0.99)
    assert thresholds["bottle"].threshold == pytest.approx(99.0)
    assert thresholds["tile"].threshold == pytest.approx(3.98)
    assert thresholds["bottle"].normal_scores == 101


def test_calibration_needs_scores():
    with pytest.raises(ValueError):
        calibrate({"bottle": np.array([])})
