import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainer.learning.detection_metrics import (
    au_pro,
    auroc,
    precision_recall,
    recall_at_false_alarms,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.4 * labels, 1)  # rounding makes many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_pixel_auroc_on_maps_matches_sklearn():
    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) < 0.1
    maps = rng.random((4, 16, 16)) + masks * 0.3
    assert auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        auroc(np.zeros(4, bool), np.arange(4.0))


def test_au_pro_hand_worked_case():
    """One image, 10 pixels in a row; two regions: A = pixels 0-1, B = pixel 4.

    scores   : 0.9 0.5 | 0.8 0.1 | 0.7 | 0.2 0.3 0.05 0.15 0.0 (pixel 4 is B)
    normal pixels: 2,3,5,6,7,8,9 (7 of them).
    Descending thresholds:
      0.9 -> A 1/2 overlap, B 0          PRO = 0.25    FPR = 0
      0.8 -> pixel 2 normal              PRO = 0.25    FPR = 1/7
      0.7 -> B found                     PRO = 0.75    FPR = 1/7
      0.5 -> A complete                  PRO = 1.0     FPR = 1/7
      0.3 -> pixel 6 normal              PRO = 1.0     FPR = 2/7 (= 0.2857 < 0.3)
      0.2 -> pixel 5 normal              PRO = 1.0     FPR = 3/7 -> cut at 0.3
    Area up to FPR 0.3: the curve is 0.25 on [0, 1/7) (a vertical jump at 0 from 0 to
    0.25, trapezoid 0 wide), jumps to 1.0 at 1/7, stays 1.0 to 0.3.
    Trapezoids: [0, 1/7]: from (0, 0.25) to (1/7, 0.25) = 0.25/7;
    the vertical steps at 1/7 add 0; [1/7, 0.3]: 1.0 * (0.3 - 1/7).
    AU-PRO = (0.25/7 + 0.3 - 1/7) / 0.3.
    """
    scores = np.array([0.9, 0.5, 0.8, 0.1, 0.7, 0.2, 0.3, 0.05, 0.15, 0.0])[None, None, :]
    mask = np.zeros((1, 1, 10), bool)
    mask[0, 0, [0, 1, 4]] = True
    # pixels 1 and 4 are not neighbours (pixels 2, 3 in between): two regions
    expected = (0.25 / 7 + 0.3 - 1 / 7) / 0.3
    assert au_pro(mask, scores) == pytest.approx(expected, rel=1e-9)


def test_au_pro_perfect_and_inverted_maps():
    mask = np.zeros((2, 8, 8), bool)
    mask[0, 2:4, 2:4] = True
    mask[1, 5:7, 1:3] = True
    assert au_pro(mask, mask.astype(float)) == pytest.approx(1.0)
    assert au_pro(mask, 1.0 - mask) == pytest.approx(0.0)


def test_precision_recall_at_threshold():
    labels = np.array([0, 0, 1, 1, 1], bool)
    scores = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    pr = precision_recall(labels, scores, 0.5)
    assert pr["precision"] == pytest.approx(2 / 3)
    assert pr["recall"] == pytest.approx(2 / 3)
    assert pr["false_alarm_rate"] == pytest.approx(0.5)


def test_recall_at_false_alarms_hand_worked_case():
    # 50 normals scored 0..49, anomalies at 10, 47.5, 48.5, 60: at most 2 % of 50 = 1
    # normal may be flagged, so the threshold is the second-highest normal, 48
    labels = np.r_[np.zeros(50, bool), np.ones(4, bool)]
    scores = np.r_[np.arange(50.0), [10.0, 47.5, 48.5, 60.0]]
    result = recall_at_false_alarms(labels, scores, 0.02)
    assert result["threshold"] == 48.0
    assert result["recall"] == 0.5  # 48.5 and 60
    assert result["false_alarm_rate"] == 0.02  # only 49
    assert recall_at_false_alarms(labels, scores, 0.0)["recall"] == 0.25  # above 49: only 60
