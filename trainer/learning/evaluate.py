"""Evaluate an artifact on the test split of every product: numbers, a JSON report, pictures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import structlog
from tqdm import tqdm

from model.loading import load_model
from model.runtime import InspectionModel
from schemas.manifest import ProductThreshold
from trainer.learning.calibrate import predicted_false_alarms
from trainer.learning.data import TEST_PARTS, Product, discover, read_mask, read_rgb, split_test
from trainer.learning.detection_metrics import (
    au_pro,
    auroc,
    precision_recall,
    recall_at_false_alarms,
)

log = structlog.get_logger(__name__)

HEADLINE = ("image_auroc", "pixel_auroc", "au_pro")


def judge_product(
    model: InspectionModel, product: Product, batch: int = 16, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (N,), maps (N, S, S) and masks (N, S, S) of one product's test images."""
    size = model.image_size
    scores, maps, masks = [], [], []
    items = product.test
    for start in tqdm(
        range(0, len(items), batch),
        desc=f"eval {product.name}",
        disable=not progress,
        leave=False,
        unit="batch",
    ):
        chunk = items[start : start + batch]
        judged = model.judge([read_rgb(item.path, size) for item in chunk])
        scores.append(judged.scores)
        maps.append(judged.maps)
        masks.extend(read_mask(item.mask, size) for item in chunk)
    return np.concatenate(scores), np.concatenate(maps), np.stack(masks)


def product_metrics(
    product: Product,
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    threshold: float | None,
) -> dict:
    labels = np.array([item.anomalous for item in product.test])
    defects = np.array([item.defect for item in product.test])
    metrics: dict = {
        "images": int(labels.size),
        "anomalous": int(labels.sum()),
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": auroc(masks, maps),
        "au_pro": au_pro(masks, maps),
        "at_2pct_false_alarms": recall_at_false_alarms(labels, scores, 0.02),
        "image_auroc_by_half": {},  # the halves choices are made on (tune) and checked on
        "per_defect": {},
    }
    position = {item.path: i for i, item in enumerate(product.test)}
    for part in TEST_PARTS:
        picked = [position[item.path] for item in split_test(product.test, part)]
        if len(set(labels[picked])) == 2:
            metrics["image_auroc_by_half"][part] = auroc(labels[picked], scores[picked])
    good = defects == "good"
    for defect in sorted(set(defects) - {"good"}):
        pick = good | (defects == defect)
        entry = {
            "images": int((defects == defect).sum()),
            "image_auroc": auroc(labels[pick], scores[pick]),
        }
        if masks[defects == defect].any():
            entry["au_pro"] = au_pro(masks[pick], maps[pick])
        if threshold is not None:
            entry["recall"] = float((scores[defects == defect] > threshold).mean())
        metrics["per_defect"][defect] = entry
    if threshold is not None:
        metrics["threshold"] = threshold
        metrics["at_threshold"] = precision_recall(labels, scores, threshold)
    return metrics


def promise_kept(entry: ProductThreshold, normal_scores: np.ndarray) -> dict | None:
    """The threshold's stated false-alarm rate beside the one measured on these normals.

    `predicted` is the central 95 % range of false alarms the manifest's promise
    allows among this many normals (calibration luck and test luck together);
    None for a release that states no rate.
    """
    if entry.expected_false_alarm_rate is None:
        return None
    alarms = int((normal_scores > entry.threshold).sum())
    low, high = predicted_false_alarms(entry, len(normal_scores))
    return {
        "calibrated_on": entry.normal_scores,
        "normals": len(normal_scores),
        "false_alarms": alarms,
        "measured_rate": alarms / max(1, len(normal_scores)),
        "expected_rate": entry.expected_false_alarm_rate,
        "interval": list(entry.false_alarm_interval or ()),
        "predicted_false_alarms": [low, high],
        "kept": low <= alarms <= high,
    }


def evaluate_artifact(
    model_path: Path,
    data_dir: Path,
    out_dir: Path,
    precision: str = "fp32",
    progress: bool = True,
    pictures: bool = True,
    device: str = "cpu",
) -> dict:
    """Evaluate every product of `data_dir` that the model knows; writes report.json + pictures."""
    model = load_model(Path(model_path), device=device, precision=precision)
    return evaluate_model(model, data_dir, out_dir, progress=progress, pictures=pictures)


def evaluate_model(
    model: InspectionModel,
    data_dir: Path,
    out_dir: Path,
    progress: bool = True,
    pictures: bool = True,
) -> dict:
    """`evaluate_artifact` for a model already in memory (e.g. an experimental network)."""
    started = time.perf_counter()
    precision = model.precision
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": model.version, "precision": precision, "products": {}}
    judged: dict[str, tuple] = {}
    for product in discover(data_dir):
        if not product.test:
            continue
        threshold = model.threshold(product.name)
        if threshold is None:
            log.warning("product unknown to the model, skipped", product=product.name)
            continue
        scores, maps, masks = judge_product(model, product, progress=progress)
        metrics = product_metrics(product, scores, maps, masks, threshold)
        normal = ~np.array([item.anomalous for item in product.test])
        promise = promise_kept(model.manifest.products[product.name], scores[normal])
        if promise is not None:
            metrics["promise"] = promise
        report["products"][product.name] = metrics
        judged[product.name] = (product, scores, maps, masks)
        log.info("evaluated", product=product.name, **{k: round(metrics[k], 4) for k in HEADLINE})
    if not report["products"]:
        raise ValueError(f"{data_dir}: no test images of any product the model knows")
    report["mean"] = {
        k: float(np.mean([m[k] for m in report["products"].values()])) for k in HEADLINE
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    if pictures:
        from trainer.learning.plots import heatmap_grid, roc_figure, score_histograms

        thresholds = {name: model.threshold(name) for name in judged}
        report["pictures"] = {
            "roc": str(roc_figure(judged, out_dir / "roc.png")),
            "scores": str(score_histograms(judged, thresholds, out_dir / "scores.png")),
            "heatmaps": str(heatmap_grid(judged, out_dir / "heatmaps.png")),
        }
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def format_table(reports: dict[str, dict]) -> str:
    """A Markdown table: one row per (run, product) and one for the mean, in percent."""
    lines = [
        "| run | product | image AUROC | pixel AUROC | AU-PRO | precision | recall "
        "| false alarms | recall at 2 % false alarms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, report in reports.items():
        for product, m in report["products"].items():
            at = m.get("at_threshold", {})
            oracle = m.get("at_2pct_false_alarms", {})
            lines.append(
                f"| {run} | {product} | {100 * m['image_auroc']:.1f} | {100 * m['pixel_auroc']:.1f}"
                f" | {100 * m['au_pro']:.1f} | {100 * at.get('precision', float('nan')):.1f}"
                f" | {100 * at.get('recall', float('nan')):.1f}"
                f" | {100 * at.get('false_alarm_rate', float('nan')):.1f}"
                f" | {100 * oracle.get('recall', float('nan')):.1f} |"
            )
        mean = report["mean"]
        lines.append(
            f"| {run} | **mean** | {100 * mean['image_auroc']:.1f} | "
            f"{100 * mean['pixel_auroc']:.1f} | {100 * mean['au_pro']:.1f} | | | | |"
        )
    return "\n".join(lines)


def format_promises(report: dict) -> str:
    """Per product: the false-alarm rate the manifest promises, and the one measured."""
    lines = [
        "| product | normals calibrated on | expected false alarms (95 % interval) "
        "| measured on test normals | allowed by the promise | kept |",
        "|---|---|---|---|---|---|",
    ]
    for product, m in report["products"].items():
        p = m.get("promise")
        if p is None:
            lines.append(f"| {product} | (an older release: no promise stated) | | | | |")
            continue
        low, high = p["interval"]
        allowed_low, allowed_high = p["predicted_false_alarms"]
        lines.append(
            f"| {product} | {p['calibrated_on']} | {100 * p['expected_rate']:.2f} % "
            f"({100 * low:.2f}–{100 * high:.2f} %) | {p['false_alarms']} of {p['normals']} "
            f"({100 * p['measured_rate']:.1f} %) | {allowed_low}–{allowed_high} "
            f"| {'yes' if p['kept'] else 'NO'} |"
        )
    return "\n".join(lines)


def format_defects(reports: dict[str, dict]) -> str:
    """Image AUROC / AU-PRO / recall at the threshold per defect type, one column per run."""
    runs = list(reports)
    lines = ["| product | defect | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    first = reports[runs[0]]["products"]
    for product, metrics in first.items():
        for defect in metrics["per_defect"]:
            cells = []
            for run in runs:
                d = reports[run]["products"][product]["per_defect"][defect]
                cells.append(
                    f"{100 * d['image_auroc']:.1f} / {100 * d.get('au_pro', float('nan')):.1f}"
                    f" / {100 * d.get('recall', float('nan')):.0f}"
                )
            lines.append(f"| {product} | {defect} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
