"""The release gate: a candidate is released only if it is not worse than the current release.

Both models are measured in the same run, on the same images:

- false-alarm rate on held-out normals (images of the snapshot never trained
  on): a candidate that stops the line more often is refused;
- image AUROC on labelled anomalies, when a folder of them is configured: a
  candidate that separates defects from normals worse is refused;
- image AUROC and recall on defects drawn on the same held-out normals
  (`trainer.learning.synthetic_anomalies`), for every product: no labels needed, so a
  candidate that flags nothing or separates nothing is caught even where no
  labelled defect exists;
- a candidate that no longer knows a product the current release serves is
  refused, since its frames would all become dead letters.

Rates are pooled and AUROCs averaged over the products both models know, with
configurable tolerances (small held-out sets are noisy). A first release has
nothing to compare against: it must pass absolute floors instead (false alarms
on held-out normals, synthetic-defect AUROC and recall).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.parity import check_export
from model.runtime import InspectionModel
from trainer.learning.data import list_images, read_rgb
from trainer.learning.detection_metrics import auroc
from trainer.learning.synthetic_anomalies import make_anomalies


@dataclass
class GateImages:
    """What both models are judged on, per product."""

    normals: dict[str, list[Path]]
    anomalies: dict[str, list[Path]] = field(default_factory=dict)


@dataclass
class Decision:
    released: bool
    reasons: list[str]
    candidate: dict
    current: dict | None

    def as_dict(self) -> dict:
        return {
            "released": self.released,
            "reasons": self.reasons,
            "candidate": self.candidate,
            "current": self.current,
        }


def labelled_anomalies(root: Path | None, products: list[str]) -> dict[str, list[Path]]:
    """Anomalous test images (`<root>/<product>/test/<defect>/`, not `good`) per product."""
    found: dict[str, list[Path]] = {}
    if root is None:
        return found
    for product in products:
        test = Path(root) / product / "test"
        if not test.is_dir():
            continue
        images = [
            image
            for defect in sorted(p for p in test.iterdir() if p.is_dir() and p.name != "good")
            for image in list_images(defect)
        ]
        if images:
            found[product] = images
    return found


def score_files(model: InspectionModel, paths: list[Path], batch: int = 16) -> np.ndarray:
    """Image scores of files, read as the worker reads frames (`read_rgb`): no skew."""
    return model.scores([read_rgb(p, model.image_size) for p in paths], batch)


def measure(model: InspectionModel, images: GateImages) -> dict:
    """Per product: held-out normals, false alarms at the model's threshold, image AUROC."""
    products: dict[str, dict] = {}
    for product, normals in sorted(images.normals.items()):
        threshold = model.threshold(product)
        if threshold is None:
            continue
        pixels = np.stack([read_rgb(p, model.image_size) for p in normals])
        normal_scores = model.scores(pixels)
        entry: dict = {
            "threshold": threshold,
            "normals": len(normals),
            "false_alarms": int((normal_scores > threshold).sum()),
        }
        entry["false_alarm_rate"] = entry["false_alarms"] / max(1, len(normals))
        drawn = model.scores(make_anomalies(pixels, seed=0)[0])
        labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(drawn))]
        entry["synthetic_auroc"] = float(auroc(labels, np.r_[normal_scores, drawn]))
        entry["synthetic_recall"] = float((drawn > threshold).mean())
        anomalies = images.anomalies.get(product, [])
        if anomalies:
            anomaly_scores = score_files(model, anomalies)
            labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomaly_scores))]
            entry["anomalies"] = len(anomalies)
            entry["image_auroc"] = float(auroc(labels, np.r_[normal_scores, anomaly_scores]))
            entry["recall"] = float((anomaly_scores > threshold).mean())
        products[product] = entry
    return {"version": model.version, "products": products, **_pooled(products, products)}


def export_disagreements(
    model: InspectionModel,
    artifact: Path,
    images: GateImages,
    runtimes: list[str],
    per_product: int = 16,
) -> list[str]:
    """Reasons to refuse a release whose ONNX export judges differently from the network.

    Each runtime runs the export on held-out normals and labelled anomalies (up to
    `per_product` of each per product), at the product's threshold; every
    disagreement is a reason (`model.parity`).
    """
    frames, products = [], []
    for product in sorted(images.normals):
        if model.threshold(product) is None:
            continue
        paths = images.normals[product][:per_product]
        paths += images.anomalies.get(product, [])[:per_product]
        frames += [read_rgb(p, model.image_size) for p in paths]
        products += [product] * len(paths)
    reasons = []
    for report in check_export(model, artifact, frames, products, runtimes):
        if not report.ok:
            reasons.append(f"export fails parity: {report.summary()}")
    return reasons


def _pooled(products: dict[str, dict], among: dict | set) -> dict:
    chosen = [products[p] for p in products if p in among]
    normals = sum(e["normals"] for e in chosen)
    aurocs = [e["image_auroc"] for e in chosen if "image_auroc" in e]
    synthetic = [e["synthetic_auroc"] for e in chosen if "synthetic_auroc" in e]
    recall = [e["synthetic_recall"] for e in chosen if "synthetic_recall" in e]
    return {
        "false_alarm_rate": sum(e["false_alarms"] for e in chosen) / max(1, normals),
        "image_auroc": float(np.mean(aurocs)) if aurocs else None,
        "synthetic_auroc": float(np.mean(synthetic)) if synthetic else None,
        "synthetic_recall": float(np.mean(recall)) if recall else None,
    }


@dataclass(frozen=True)
class Floors:
    """What any release must show on its own, first release included."""

    max_false_alarm_rate: float = 0.05
    min_synthetic_auroc: float = 0.6
    min_synthetic_recall: float = 0.05


def _below_floors(pooled: dict, floors: Floors) -> list[str]:
    reasons = []
    if pooled["false_alarm_rate"] > floors.max_false_alarm_rate:
        reasons.append(
            f"false alarms on held-out normals {pooled['false_alarm_rate']:.3f} > floor "
            f"{floors.max_false_alarm_rate}"
        )
    auc, recall = pooled.get("synthetic_auroc"), pooled.get("synthetic_recall")
    if auc is not None and auc < floors.min_synthetic_auroc:
        reasons.append(f"AUROC on drawn defects {auc:.3f} < floor {floors.min_synthetic_auroc}")
    if recall is not None and recall < floors.min_synthetic_recall:
        reasons.append(
            f"recall on drawn defects {recall:.3f} < floor {floors.min_synthetic_recall}: "
            "the model flags (almost) nothing"
        )
    return reasons


def decide(
    candidate: dict,
    current: dict | None,
    current_products: list[str],
    max_false_alarm_increase: float,
    max_auroc_drop: float,
    floors: Floors | None = None,
) -> Decision:
    """Compare two `measure` results; the reasons say why a candidate is refused.

    A first release (no `current`) is judged by the absolute `floors` alone. A
    later one is compared with the current release, and must still flag some of
    the drawn defects (the recall floor): a model that flags nothing never passes.
    """
    floors = floors or Floors()
    own = _pooled(candidate["products"], candidate["products"])
    if current is None:
        reasons = _below_floors(own, floors)
        verdict = reasons or ["first release: passes the absolute floors"]
        return Decision(not reasons, verdict, candidate, None)
    reasons = _below_floors(
        own,
        Floors(
            max_false_alarm_rate=1.0,
            min_synthetic_auroc=0.0,
            min_synthetic_recall=floors.min_synthetic_recall,
        ),
    )
    dropped = sorted(set(current_products) - set(candidate["products"]))
    if dropped:
        reasons.append(f"candidate does not know products the current release serves: {dropped}")
    common = set(candidate["products"]) & set(current["products"])
    cand, cur = _pooled(candidate["products"], common), _pooled(current["products"], common)
    if cand["false_alarm_rate"] > cur["false_alarm_rate"] + max_false_alarm_increase:
        reasons.append(
            f"false alarms on held-out normals {cand['false_alarm_rate']:.3f} > current "
            f"{cur['false_alarm_rate']:.3f} + tolerance {max_false_alarm_increase}"
        )
    for key, what in (("image_auroc", "labelled anomalies"), ("synthetic_auroc", "drawn defects")):
        if cand[key] is not None and cur[key] is not None and cand[key] < cur[key] - max_auroc_drop:
            reasons.append(
                f"image AUROC on {what} {cand[key]:.3f} < current {cur[key]:.3f} "
                f"- tolerance {max_auroc_drop}"
            )
    compared = {"products": sorted(common), "candidate": cand, "current": cur}
    candidate = {**candidate, "compared": compared}
    verdict = reasons or ["not worse than the current release"]
    return Decision(not reasons, verdict, candidate, current)
