"""The threshold rule and what it promises: split-conformal, with the rate's interval."""

import numpy as np
import pytest

from model.false_alarms import beta_interval, rate_interval
from trainer.learning.calibrate import (
    calibrate,
    conformal_threshold,
    predicted_false_alarms,
)


def test_the_threshold_is_the_conformal_order_statistic_of_held_out_scores():
    scores = {"bottle": np.arange(199, dtype=float), "tile": np.arange(2000, dtype=float)}
    thresholds = calibrate(scores, quantile=0.99)
    # k = ceil((n + 1) * 0.99): the 198th of 199 (value 197), the 1981st of 2000 (value 1980)
    assert thresholds["bottle"].threshold == 197.0
    assert thresholds["tile"].threshold == 1980.0
    bottle = thresholds["bottle"]
    assert bottle.normal_scores == 199 and bottle.target_false_alarm_rate == pytest.approx(0.01)
    assert bottle.expected_false_alarm_rate == pytest.approx(2 / 200)
    low, high = bottle.false_alarm_interval
    assert 0.0 < low < 0.01 < high < 0.05


def test_few_normals_promise_what_they_can_and_say_so():
    few = conformal_threshold(np.arange(42, dtype=float), 0.99)
    assert few.threshold == 41.0  # the maximum
    assert few.expected_false_alarm_rate == pytest.approx(1 / 43)
    assert "cannot promise 1 % false alarms, at best 2.3 %" in few.rule


def test_a_target_per_product_overrides_the_default():
    scores = {"bottle": np.arange(999, dtype=float), "tile": np.arange(999, dtype=float)}
    thresholds = calibrate(scores, quantile=0.99, per_product={"tile": 0.95})
    assert thresholds["tile"].threshold == 949.0  # ceil(1000 * 0.95) = 950th
    assert thresholds["tile"].expected_false_alarm_rate == pytest.approx(0.05)
    assert thresholds["bottle"].expected_false_alarm_rate == pytest.approx(0.01)


def test_the_interval_is_the_beta_distributions():
    # Beta(1, 1) is uniform: its central 95 % are [0.025, 0.975]
    assert beta_interval(1, 1) == pytest.approx((0.025, 0.975), abs=1e-9)
    # Beta(1, b): P(X <= x) = 1 - (1 - x)^b, so the 2.5 % quantile is 1 - 0.975^(1/b)
    assert beta_interval(1, 99)[0] == pytest.approx(1 - 0.975 ** (1 / 99), rel=1e-6)


def test_the_predicted_false_alarms_on_a_test_set_widen_with_its_size():
    entry = conformal_threshold(np.arange(199, dtype=float), 0.99)
    assert predicted_false_alarms(entry, 20) == (0, 1)
    low, high = predicted_false_alarms(entry, 1000)
    assert low <= 10 <= high and high - low > 10


def test_calibration_needs_scores():
    with pytest.raises(ValueError):
        calibrate({"bottle": np.array([])})


def test_a_measured_rate_gets_its_clopper_pearson_interval():
    assert rate_interval(0, 100)[0] == 0.0
    assert rate_interval(0, 100)[1] == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-6)
    low, high = rate_interval(5, 100)
    assert low < 0.05 < high
    assert rate_interval(100, 100)[1] == 1.0
