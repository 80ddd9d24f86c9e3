"""Hyperparameter sweep judged on labelled anomalies that the final report never uses.

Each trial is trained from the same seed; after every epoch the plain student
(DCAM dropped, as on the line) scores every test image, and image AUROC is
reported separately on the "tune" and "holdout" halves (`data.split_test`).
Choices are made on "tune" only; "holdout" says whether a choice generalises.
One run answers the issue's "why" questions side by side: does KD help, at
which weight and temperature, at which learning rate, after how many epochs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

from trainer.data import TEST_PARTS, TestImage, discover, read_rgb, split_test
from trainer.dcam import DCAM
from trainer.losses import LossWeights
from trainer.metrics import auroc
from trainer.plots import sweep_figure
from trainer.train import TrainConfig, student_scores, teacher_pyramid, train
from worker.model.network import StudentTeacher

log = structlog.get_logger(__name__)

BASELINE = TrainConfig(dcam="none", losses=LossWeights(spatial_kd=0.0))
PAPER = TrainConfig(dcam="channel", losses=LossWeights())

TRIALS: dict[str, TrainConfig] = {
    "a_stfpm": BASELINE,
    "b_paper_kd1e-3_T4": PAPER,
    "b_no_kd": replace(PAPER, losses=LossWeights(spatial_kd=0.0)),
    "b_kd1e-2_T4": replace(PAPER, losses=LossWeights(spatial_kd=1e-2)),
    "b_kd1e-1_T4": replace(PAPER, losses=LossWeights(spatial_kd=1e-1)),
    "b_kd1e-3_T1": replace(PAPER, losses=LossWeights(spatial_kd=1e-3, temperature=1.0)),
    "b_kd1e-3_T16": replace(PAPER, losses=LossWeights(spatial_kd=1e-3, temperature=16.0)),
    "b_lr0.4": replace(PAPER, lr=0.4),
    "b_lr0.03": replace(PAPER, lr=0.03),
    "a_lr0.4": replace(BASELINE, lr=0.4),
    "a_lr0.03": replace(BASELINE, lr=0.03),
    "b_kd1e-2_T4_lr0.03": replace(PAPER, lr=0.03, losses=LossWeights(spatial_kd=1e-2)),
    "b_kd1e-1_T4_lr0.01": replace(PAPER, lr=0.01, losses=LossWeights(spatial_kd=1e-1)),
    "b_kd1e-2_T4_lr0.01": replace(PAPER, lr=0.01, losses=LossWeights(spatial_kd=1e-2)),
}


class LabelledScorer:
    """Image scores of every test image, with the teacher's features computed once."""

    def __init__(self, data_dir: Path, image_size: int, network: StudentTeacher) -> None:
        self.parts: dict[str, dict[str, list[TestImage]]] = {}
        images: list[np.ndarray] = []
        self.index: dict[str, list[int]] = {}
        for product in discover(data_dir):
            self.parts[product.name] = {p: split_test(product.test, p) for p in TEST_PARTS}
            for part, items in self.parts[product.name].items():
                start = len(images)
                images.extend(read_rgb(item.path, image_size) for item in items)
                self.index[f"{product.name}/{part}"] = list(range(start, len(images)))
        self.images = np.stack(images)
        self.teacher = teacher_pyramid(network, self.images)

    def scores(self, network: StudentTeacher) -> np.ndarray:
        """Max of the anomaly map of every test image, through the plain student (fp32)."""
        return student_scores(network, self.images, self.teacher)[0]

    def aurocs(self, scores: np.ndarray) -> dict[str, float]:
        """Image AUROC per product and part, the mean per part, and tiles per defect (tune)."""
        result: dict[str, float] = {}
        for product, parts in self.parts.items():
            for part, items in parts.items():
                labels = np.array([item.anomalous for item in items])
                result[f"{product}/{part}"] = auroc(labels, scores[self.index[f"{product}/{part}"]])
                if part != "tune":
                    continue
                defects = np.array([item.defect for item in items])
                part_scores = scores[self.index[f"{product}/{part}"]]
                normal = defects == "good"
                for defect in sorted(set(defects) - {"good"}):
                    chosen = normal | (defects == defect)
                    result[f"{product}/tune/{defect}"] = auroc(
                        defects[chosen] != "good", part_scores[chosen]
                    )
        for part in TEST_PARTS:
            result[f"mean/{part}"] = float(np.mean([result[f"{p}/{part}"] for p in self.parts]))
        return result


def run_sweep(
    data_dir: Path,
    out_dir: Path,
    trials: list[str],
    epochs: int,
    batch_size: int,
    seed: int,
    bf16: bool,
    image_size: int = 256,
) -> dict[str, list[dict]]:
    """Train every trial; write one JSON line per (trial, epoch) to sweep.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / "sweep.jsonl"
    done = _read_journal(journal)
    scorer: LabelledScorer | None = None
    for name in trials:
        if len(done.get(name, [])) >= epochs:
            log.info("trial already in the journal", trial=name)
            continue
        done[name] = []
        config = replace(TRIALS[name], epochs=epochs, batch_size=batch_size, seed=seed, bf16=bf16)

        def on_epoch(
            record: dict,
            network: StudentTeacher,
            dcam: DCAM,
            name: str = name,
            size: int = config.image_size,
        ) -> None:
            nonlocal scorer
            if scorer is None:
                scorer = LabelledScorer(data_dir, size, network)
            row = {
                "trial": name,
                "epoch": record["epoch"],
                "loss": record["loss"],
                "val_mean_map": record["val_mean_map"],
                "seconds": record["seconds"],
                **scorer.aurocs(scorer.scores(network)),
            }
            done[name].append(row)
            with journal.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{name} epoch {row['epoch']}: tune {row['mean/tune']:.4f} "
                f"holdout {row['mean/holdout']:.4f} val map {row['val_mean_map']:.5f}",
                flush=True,
            )

        log.info("sweep trial", trial=name, config=config.as_dict())
        train(data_dir, config, on_epoch=on_epoch)
    sweep_figure({name: done[name] for name in trials if done.get(name)}, out_dir / "sweep.png")
    return done


def _read_journal(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["trial"], []).append(row)
    return rows


def format_sweep(rows: dict[str, list[dict]]) -> str:
    """Per trial: the epoch the training would keep (lowest val map) and the best on tune."""
    lines = [
        f"{'trial':<22} {'epochs':>6} {'kept ep':>7} {'tune':>6} {'holdout':>7} "
        f"{'best tune ep':>12} {'tune':>6} {'holdout':>7}"
    ]
    for name, history in rows.items():
        if not history:
            continue
        kept = min(history, key=lambda r: r["val_mean_map"])
        best = max(history, key=lambda r: r["mean/tune"])
        lines.append(
            f"{name:<22} {len(history):>6} {kept['epoch']:>7} "
            f"{kept['mean/tune']:>6.3f} {kept['mean/holdout']:>7.3f} "
            f"{best['epoch']:>12} {best['mean/tune']:>6.3f} {best['mean/holdout']:>7.3f}"
        )
    return "\n".join(lines)
