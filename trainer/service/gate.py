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
  refused, since its frames would all become dead letters;
- a candidate whose ONNX export judges those images differently from its
  network is refused (`model.parity`): a worker on a compiled runtime would
  serve other verdicts than the ones measured here.

Rates are pooled and AUROCs averaged over the products both models know, with
configurable tolerances (small held-out sets are noisy). A first release has
nothing to compare against: it must pass absolute floors instead (false alarms
on held-out normals, synthetic-defect AUROC and recall). `judge` returns the
whole, final verdict as a `schemas.gate.GateReport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.parity import check_export
from model.runtime import InspectionModel
from model.runtimes import ONNX_FILE
from schemas.gate import Comparison, GatePolicy, GateReport, ModelMeasure, Pooled, ProductMeasure
from trainer.learning.data import list_images, read_images
from trainer.learning.detection_metrics import auroc
from trainer.learning.synthetic_anomalies import make_anomalies


@dataclass
class Pixels:
    """A product's gate images at one size, decoded once: normals, drawn and labelled defects."""

    normals: np.ndarray
    drawn: np.ndarray
    anomalies: np.ndarray


@dataclass
class GateImages:
    """What both models are judged on, per product: the files, decoded once per image size.

    The candidate, the current release and the export's parity check all score
    the same pixels; a current release of another input size gets its own
    decoding, as the worker would feed it.
    """

    normals: dict[str, list[Path]]
    anomalies: dict[str, list[Path]] = field(default_factory=dict)
    _decoded: dict[int, dict[str, Pixels]] = field(default_factory=dict, repr=False)

    def at(self, size: int) -> dict[str, Pixels]:
        """Every product's pixels at `size` x `size`, read as the worker reads frames."""
        if size not in self._decoded:
            decoded = {}
            for product, paths in sorted(self.normals.items()):
                normals = read_images(paths, size)
                decoded[product] = Pixels(
                    normals=normals,
                    drawn=make_anomalies(normals, seed=0)[0],
                    anomalies=read_images(self.anomalies.get(product, []), size),
                )
            self._decoded[size] = decoded
        return self._decoded[size]


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
    return model.scores(list(read_images(paths, model.image_size)), batch)


def measure(model: InspectionModel, images: GateImages) -> ModelMeasure:
    """Per product: held-out normals, false alarms at the model's threshold, image AUROCs."""
    products: dict[str, ProductMeasure] = {}
    for product, pixels in images.at(model.image_size).items():
        threshold = model.threshold(product)
        if threshold is None:
            continue
        normal = model.scores(list(pixels.normals))
        drawn = model.scores(list(pixels.drawn))
        false_alarms = int((normal > threshold).sum())
        entry = ProductMeasure(
            threshold=threshold,
            normals=len(normal),
            false_alarms=false_alarms,
            false_alarm_rate=false_alarms / max(1, len(normal)),
            synthetic_auroc=auroc_of(normal, drawn),
            synthetic_recall=float((drawn > threshold).mean()),
        )
        if len(pixels.anomalies):
            labelled = model.scores(list(pixels.anomalies))
            entry.anomalies = len(labelled)
            entry.image_auroc = auroc_of(normal, labelled)
            entry.recall = float((labelled > threshold).mean())
        products[product] = entry
    return ModelMeasure(
        version=model.version, products=products, **pooled(products.values()).model_dump()
    )


def export_disagreements(
    model: InspectionModel,
    artifact: Path,
    images: GateImages,
    runtimes: Sequence[str],
    per_product: int = 16,
) -> list[str]:
    """Reasons to refuse a release whose ONNX export judges differently from the network.

    Each runtime runs the export on held-out normals and labelled anomalies (up to
    `per_product` of each per product, the pixels the models were measured on),
    at the product's threshold; every disagreement is a reason (`model.parity`).
    """
    frames: list[np.ndarray] = []
    products: list[str] = []
    for product, pixels in images.at(model.image_size).items():
        if model.threshold(product) is None:
            continue
        chosen = [*pixels.normals[:per_product], *pixels.anomalies[:per_product]]
        frames += chosen
        products += [product] * len(chosen)
    return [
        f"export fails parity: {report.summary()}"
        for report in check_export(model, artifact, frames, products, runtimes)
        if not report.ok
    ]


def pooled(entries: Iterable[ProductMeasure]) -> Pooled:
    """False alarms pooled, AUROCs and recall averaged, over `entries`."""
    chosen = list(entries)
    normals = sum(e.normals for e in chosen)

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else None

    return Pooled(
        false_alarm_rate=sum(e.false_alarms for e in chosen) / max(1, normals),
        image_auroc=mean([e.image_auroc for e in chosen]),
        synthetic_auroc=mean([e.synthetic_auroc for e in chosen]),
        synthetic_recall=mean([e.synthetic_recall for e in chosen]),
    )


def _below_floors(own: Pooled, policy: GatePolicy) -> list[str]:
    reasons = []
    if own.false_alarm_rate > policy.max_false_alarm_rate:
        reasons.append(
            f"false alarms on held-out normals {own.false_alarm_rate:.3f} > floor "
            f"{policy.max_false_alarm_rate}"
        )
    auc, recall = own.synthetic_auroc, own.synthetic_recall
    if auc is not None and auc < policy.min_synthetic_auroc:
        reasons.append(f"AUROC on drawn defects {auc:.3f} < floor {policy.min_synthetic_auroc}")
    if recall is not None and recall < policy.min_synthetic_recall:
        reasons.append(
            f"recall on drawn defects {recall:.3f} < floor {policy.min_synthetic_recall}: "
            "the model flags (almost) nothing"
        )
    return reasons


def decide(
    candidate: ModelMeasure,
    current: ModelMeasure | None,
    current_products: Sequence[str],
    policy: GatePolicy | None = None,
    export_reasons: Sequence[str] = (),
) -> GateReport:
    """Compare two `measure` results: the final report, whose reasons say why.

    A first release (no `current`) is judged by the absolute floors alone. A
    later one is compared with the current release, and must still flag some of
    the drawn defects (the recall floor): a model that flags nothing never passes.
    `export_reasons` (`export_disagreements`) refuse it whatever it measured.
    """
    policy = policy or GatePolicy()
    own = pooled(candidate.products.values())
    if current is None:
        reasons = [*_below_floors(own, policy), *export_reasons]
        verdict = reasons or ["first release: passes the absolute floors"]
        return GateReport(released=not reasons, reasons=verdict, candidate=candidate, policy=policy)
    reasons = _below_floors(
        own,
        policy.model_copy(update={"max_false_alarm_rate": 1.0, "min_synthetic_auroc": 0.0}),
    )
    dropped = sorted(set(current_products) - set(candidate.products))
    if dropped:
        reasons.append(f"candidate does not know products the current release serves: {dropped}")
    common = sorted(set(candidate.products) & set(current.products))
    cand = pooled(candidate.products[p] for p in common)
    cur = pooled(current.products[p] for p in common)
    if cand.false_alarm_rate > cur.false_alarm_rate + policy.max_false_alarm_increase:
        reasons.append(
            f"false alarms on held-out normals {cand.false_alarm_rate:.3f} > current "
            f"{cur.false_alarm_rate:.3f} + tolerance {policy.max_false_alarm_increase}"
        )
    for key, what in (("image_auroc", "labelled anomalies"), ("synthetic_auroc", "drawn defects")):
        mine, theirs = getattr(cand, key), getattr(cur, key)
        if mine is not None and theirs is not None and mine < theirs - policy.max_auroc_drop:
            reasons.append(
                f"image AUROC on {what} {mine:.3f} < current {theirs:.3f} "
                f"- tolerance {policy.max_auroc_drop}"
            )
    reasons += export_reasons
    compared = Comparison(products=common, candidate=cand, current=cur)
    return GateReport(
        released=not reasons,
        reasons=reasons or ["not worse than the current release"],
        candidate=candidate.model_copy(update={"compared": compared}),
        current=current,
        policy=policy,
    )


def judge(
    candidate: InspectionModel,
    artifact: Path,
    current: InspectionModel | None,
    images: GateImages,
    policy: GatePolicy,
    export_runtimes: Sequence[str],
) -> GateReport:
    """The gate in one call: both models measured, the export checked, the final verdict."""
    candidate_measure = measure(candidate, images)
    current_measure = measure(current, images) if current is not None else None
    export_reasons: list[str] = []
    if ONNX_FILE in {f.name for f in candidate.manifest.files}:
        export_reasons = export_disagreements(candidate, artifact, images, export_runtimes)
    return decide(
        candidate_measure,
        current_measure,
        sorted(current.manifest.products) if current is not None else [],
        policy,
        export_reasons,
    )


def auroc_of(normal: np.ndarray, defective: np.ndarray) -> float:
    labels = np.r_[np.zeros(len(normal)), np.ones(len(defective))]
    return float(auroc(labels, np.r_[normal, defective]))
