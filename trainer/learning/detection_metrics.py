"""Threshold-free and thresholded metrics: AUROC, ROC curve, AU-PRO, precision/recall."""

from __future__ import annotations

import cv2
import numpy as np


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("ROC needs both normal and anomalous samples")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # keep the last index of each run of equal scores: ties move together
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tp = np.cumsum(labels)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal; ties count half, like sklearn)."""
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def au_pro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, normalised to [0, 1].

    Bergmann et al. (MVTec AD): every connected defect region weighs the same,
    whatever its size. Exact (no threshold grid): sort all pixels once by score,
    each anomalous pixel adds 1/(its region's size) to the overlap of its region,
    each normal pixel 1/(number of normal pixels) to the false-positive rate.
    `masks`: (N, H, W) bool; `maps`: (N, H, W) float.
    """
    masks = np.asarray(masks, bool)
    maps = np.asarray(maps, np.float32)
    pro_step = np.zeros(masks.shape, np.float64)
    regions = 0
    for i, mask in enumerate(masks):
        count, labelled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for region in range(1, count):
            where = labelled == region
            pro_step[i][where] = 1.0 / where.sum()
        regions += count - 1
    normal = ~masks
    n_normal = normal.sum()
    if regions == 0 or n_normal == 0:
        raise ValueError("AU-PRO needs at least one defect region and one normal pixel")
    scores = maps.ravel()
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    fpr = np.cumsum(normal.ravel()[order] / n_normal)
    pro = np.cumsum(pro_step.ravel()[order]) / regions
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    # cut at the limit, interpolating the point exactly on it
    keep = fpr <= fpr_limit
    fpr_cut, pro_cut = fpr[keep], pro[keep]
    if fpr_cut[-1] < fpr_limit:
        fpr_cut = np.r_[fpr_cut, fpr_limit]
        pro_cut = np.r_[pro_cut, np.interp(fpr_limit, fpr, pro)]
    return float(np.trapezoid(pro_cut, fpr_cut) / fpr_limit)


def precision_recall(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """At a decision threshold (score > threshold is NG): precision, recall, false-alarm rate."""
    labels = np.asarray(labels, bool)
    flagged = np.asarray(scores) > threshold
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    negatives = int((~labels).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "false_alarm_rate": fp / negatives if negatives else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def recall_at_false_alarms(
    labels: np.ndarray, scores: np.ndarray, max_false_alarms: float = 0.02
) -> dict[str, float]:
    """Recall at the lowest threshold that flags at most `max_false_alarms` of the normals.

    The threshold is read off the labelled normals themselves (an oracle a line never
    has): it says what the scores could deliver at that false-alarm rate, beside the
    recall at the threshold calibrated on held-out train normals.
    """
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    normals = np.sort(scores[~labels])[::-1]
    if normals.size == 0 or labels.sum() == 0:
        raise ValueError("recall at a false-alarm rate needs normal and anomalous images")
    allowed = int(np.floor(max_false_alarms * normals.size))
    threshold = normals[allowed] if allowed < normals.size else -np.inf
    return {
        "max_false_alarm_rate": max_false_alarms,
        "threshold": float(threshold),
        "recall": float((scores[labels] > threshold).mean()),
        "false_alarm_rate": float((normals > threshold).mean()),
    }
