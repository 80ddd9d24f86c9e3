"""The gate of a line's own threshold: the same weights, one threshold moved, measured both ways.

A release that changes only a line's threshold of one product (`operations.
line_calibration`) is not trained, so the comparison of two models' rankings
(`trainer.service.gate.decide`) says nothing of it; what can change is who
passes. It is refused when:

- the proposal itself is refused (too few normals, a confirmed-defective part
  that would pass, the line's parts unlike the model's normals);
- the false-alarm rate it promises on the line's normals exceeds the policy's
  floor for any release (`GatePolicy.max_false_alarm_rate`);
- it flags fewer of the defects drawn onto the product's held-out normals than
  any release must (`GatePolicy.min_synthetic_recall`), or there are no
  held-out normals to draw them on.

The held-out normals' false alarms and the labelled anomalies' recall at both
thresholds are reported beside, for the operator to read, not gated: the line's
own normals, not the store's sample, are what the threshold is calibrated for.
"""

from __future__ import annotations

import numpy as np

from model.runtime import InspectionModel
from operations.line_calibration import Proposal
from schemas.gate import GatePolicy, GateReport, ModelMeasure, ProductMeasure
from trainer.service.gate import GateImages, auroc_of, pooled


def judge_line_threshold(
    model: InspectionModel,
    proposal: Proposal,
    version: str,
    images: GateImages,
    policy: GatePolicy,
) -> GateReport:
    """The report of one line-threshold change: today's threshold as current, the proposal
    as the candidate, scored once."""
    product = proposal.product
    pixels = images.at(model.image_size).get(product)
    reasons = list(proposal.refusals)
    today = proposal.today
    new = proposal.threshold if proposal.threshold is not None else today
    measures: dict[str, ProductMeasure] = {}
    if pixels is None or not len(pixels.normals):
        reasons.append(f"no held-out normals of {product} in the normal store to gate on")
    else:
        normal = model.scores(list(pixels.normals))
        drawn = model.scores(list(pixels.drawn))
        labelled = model.scores(list(pixels.anomalies)) if len(pixels.anomalies) else None
        for name, threshold in (("today", today), ("proposed", new)):
            measures[name] = _at(threshold, normal, drawn, labelled)
        recall = measures["proposed"].synthetic_recall or 0.0
        if recall < policy.min_synthetic_recall:
            reasons.append(
                f"recall on drawn defects {recall:.3f} at {new:.6g} < floor "
                f"{policy.min_synthetic_recall}: the line would flag (almost) nothing"
            )
    expected = proposal.expected_false_alarm_rate
    if expected is not None and expected > policy.max_false_alarm_rate:
        reasons.append(
            f"expected false alarms on line {proposal.line} {expected:.3f} > floor "
            f"{policy.max_false_alarm_rate}"
        )
    released = not reasons
    if released:
        reasons = [
            f"line {proposal.line}, {product}: threshold {today:.6g} -> {new:.6g}, expected "
            f"false alarms {100 * (expected or 0):.2g} % on the line's {proposal.normals} normals"
        ]

    def model_measure(name: str, label: str) -> ModelMeasure:
        products = {product: measures[name]} if name in measures else {}
        return ModelMeasure(
            version=label, products=products, **pooled(products.values()).model_dump()
        )

    return GateReport(
        released=released,
        reasons=reasons,
        candidate=model_measure("proposed", version),
        current=model_measure("today", model.version),
        policy=policy,
    )


def _at(
    threshold: float, normal: np.ndarray, drawn: np.ndarray, labelled: np.ndarray | None
) -> ProductMeasure:
    false_alarms = int((normal > threshold).sum())
    entry = ProductMeasure(
        threshold=threshold,
        normals=len(normal),
        false_alarms=false_alarms,
        false_alarm_rate=false_alarms / max(1, len(normal)),
        synthetic_auroc=auroc_of(normal, drawn),
        synthetic_recall=float((drawn > threshold).mean()),
    )
    if labelled is not None:
        entry.anomalies = len(labelled)
        entry.image_auroc = auroc_of(normal, labelled)
        entry.recall = float((labelled > threshold).mean())
    return entry
