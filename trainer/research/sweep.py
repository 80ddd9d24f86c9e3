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
from pathlib import Path

import numpy as np
import structlog
import torch

from model.anomaly_map import score_pyramids
from model.network import StudentTeacher
from schemas.manifest import Scoring
from trainer.learning.config import (
    DEFAULT_SCORING,
    PAPER,
    PAPER_LOSSES,
    LossWeights,
    TrainConfig,
)
from trainer.learning.data import TEST_PARTS, TestImage, discover, read_rgb, split_test
from trainer.learning.dcam import DCAM
from trainer.learning.detection_metrics import auroc
from trainer.learning.export import export
from trainer.learning.plots import epochs_figure, sweep_figure
from trainer.learning.train import student_scores, teacher_pyramid, train

log = structlog.get_logger(__name__)


def _losses(**changes: float) -> LossWeights:
    """The paper's loss weights with `changes`."""
    return PAPER_LOSSES.model_copy(update=changes)


BASELINE = PAPER.model_copy(update=dict(dcam="none", losses=_losses(spatial_kd=0.0)))

TRIALS: dict[str, TrainConfig] = {
    "a_stfpm": BASELINE,
    "b_paper_kd1e-3_T4": PAPER,
    "b_no_kd": PAPER.model_copy(update=dict(losses=_losses(spatial_kd=0.0))),
    "b_kd1e-2_T4": PAPER.model_copy(update=dict(losses=_losses(spatial_kd=1e-2))),
    "b_kd1e-1_T4": PAPER.model_copy(update=dict(losses=_losses(spatial_kd=1e-1))),
    "b_kd1e-3_T1": PAPER.model_copy(update=dict(losses=_losses(spatial_kd=1e-3, temperature=1.0))),
    "b_kd1e-3_T16": PAPER.model_copy(
        update=dict(losses=_losses(spatial_kd=1e-3, temperature=16.0))
    ),
    "b_lr0.4": PAPER.model_copy(update=dict(lr=0.4)),
    "b_lr0.03": PAPER.model_copy(update=dict(lr=0.03)),
    "a_lr0.4": BASELINE.model_copy(update=dict(lr=0.4)),
    "a_lr0.03": BASELINE.model_copy(update=dict(lr=0.03)),
    "b_kd1e-2_T4_lr0.03": PAPER.model_copy(update=dict(lr=0.03, losses=_losses(spatial_kd=1e-2))),
    "b_kd1e-1_T4_lr0.01": PAPER.model_copy(update=dict(lr=0.01, losses=_losses(spatial_kd=1e-1))),
    "b_kd1e-2_T4_lr0.01": PAPER.model_copy(update=dict(lr=0.01, losses=_losses(spatial_kd=1e-2))),
    "b_hard0.1": PAPER.model_copy(update=dict(losses=_losses(hard_fraction=0.1))),
    "b_hard0.02": PAPER.model_copy(update=dict(losses=_losses(hard_fraction=0.02))),
    "b_denoise0.5": PAPER.model_copy(update=dict(denoise_fraction=0.5)),
    "b_hard0.1_denoise0.5": PAPER.model_copy(
        update=dict(denoise_fraction=0.5, losses=_losses(hard_fraction=0.1))
    ),
    # kenpin's default recipe (TrainConfig() but its epochs): the above with a decaying
    # rate, scored at stride 16 with 3 x 3 averaged features plus the plain ones, top 1 %
    "b_hard0.1_denoise0.5_cos": PAPER.model_copy(
        update=dict(
            denoise_fraction=0.5,
            lr_schedule="cosine",
            losses=_losses(hard_fraction=0.1),
            scoring=DEFAULT_SCORING,
        )
    ),
}
# The default recipe with the larger ImageNet teacher (Lite2: 24/48/120 channels; its
# nearest-neighbour probe on the tiles is above Lite0's).
TRIALS["b_hard0.1_denoise0.5_cos_lite2"] = TRIALS["b_hard0.1_denoise0.5_cos"].model_copy(
    update=dict(backbone="efficientnet_lite2")
)


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
        self.teacher_name = (network.backbone, image_size)

    @classmethod
    def reuse(
        cls, scorer: LabelledScorer | None, data_dir: Path, image_size: int, network: StudentTeacher
    ) -> LabelledScorer:
        """`scorer` if it holds this network's teacher features, else a new one: the test
        images' teacher features are computed once per teacher and size, never reused
        for another teacher (Lite0 has 112 channels at stride 16, Lite2 120)."""
        if scorer is not None and scorer.teacher_name == (network.backbone, image_size):
            return scorer
        return cls(data_dir, image_size, network)

    def scores(self, network: StudentTeacher) -> np.ndarray:
        """Image score of every test image as the network scores, plain student (fp32)."""
        return student_scores(network, self.images, self.teacher).scores

    @torch.no_grad()
    def variant_scores(
        self, network: StudentTeacher, variants: list[Scoring], batch: int = 32
    ) -> dict[str, np.ndarray]:
        """Image scores under each scoring variant, from ONE pass of the student.

        A diagnosis, not a choice: which scales carry the signal, whether local
        feature averaging and a top-k score help, without retraining.
        """
        network.student.eval()
        size = self.images.shape[1]
        student: list[list[torch.Tensor]] = []
        for start in range(0, len(self.images), batch):
            chunk = torch.from_numpy(self.images[start : start + batch]).permute(0, 3, 1, 2)
            chunk = chunk.to(network.mean.device)
            student.append(network.student_features(network.normalise(chunk)))
        scores: dict[str, list[torch.Tensor]] = {v.label: [] for v in variants}
        for i, s in enumerate(student):
            t = [f[i * batch : (i + 1) * batch] for f in self.teacher]
            for v in variants:
                scores[v.label].append(score_pyramids(t, s, (size, size), v).scores.cpu())
        return {label: torch.cat(chunks).numpy() for label, chunks in scores.items()}

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
    variants: list[Scoring] | None = None,
    device: str = "auto",
) -> dict[str, list[dict]]:
    """Train every trial; write one JSON line per (trial, epoch) to sweep.jsonl.

    With `variants`, each row also holds the AUROCs under each scoring variant.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / "sweep.jsonl"
    done = _read_journal(journal)
    scorer: LabelledScorer | None = None
    for name in trials:
        if len(done.get(name, [])) >= epochs:
            log.info("trial already in the journal", trial=name)
            continue
        done[name] = []
        config = TRIALS[name].model_copy(
            update=dict(
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                bf16=bf16,
                image_size=image_size,
                device=device,
            )
        )

        def on_epoch(
            record: dict,
            network: StudentTeacher,
            dcam: DCAM,
            name: str = name,
            size: int = config.image_size,
        ) -> None:
            nonlocal scorer
            scorer = LabelledScorer.reuse(scorer, data_dir, size, network)
            row = {
                "trial": name,
                "epoch": record["epoch"],
                "loss": record["loss"],
                "val_mean_map": record["val_mean_map"],
                "synthetic_auroc": record["synthetic_auroc"],
                "seconds": record["seconds"],
                **scorer.aurocs(scorer.scores(network)),
            }
            if variants:
                row["variants"] = {
                    label: scorer.aurocs(scores)
                    for label, scores in scorer.variant_scores(network, variants).items()
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
        result = train(data_dir, config, on_epoch=on_epoch)
        # the trial's kept checkpoint, as an artifact `kenpin-trainer eval` can score
        export(result, out_dir / name / "model")
    sweep_figure({name: done[name] for name in trials if done.get(name)}, out_dir / "sweep.png")
    for name in trials:
        if done.get(name):
            (out_dir / name).mkdir(exist_ok=True)
            epochs_figure(
                done[name],
                out_dir / name / "epochs.png",
                f"{name}: tune (solid), holdout (dotted)",
            )
    return done


#: The scoring variants of the diagnosis: each scale alone, scales summed, with and
#: without 3 x 3 feature averaging, max vs the mean of the top 1 % of the map.
DIAGNOSIS: list[Scoring] = [
    Scoring(),
    Scoring(scales=(0,)),
    Scoring(scales=(1,)),
    Scoring(scales=(2,)),
    Scoring(scales=(1, 2)),
    Scoring(feature_pool=3),
    Scoring(scales=(1, 2), feature_pool=3),
    Scoring(scales=(2,), feature_pool=3),
    Scoring(top_fraction=0.01),
    Scoring(feature_pool=3, top_fraction=0.01),
    Scoring(scales=(1, 2), feature_pool=3, top_fraction=0.01),
    Scoring(scales=(2,), feature_pool=3, top_fraction=0.01),
    Scoring(scales=(2,), feature_pool=3, plus_unpooled=True),
    Scoring(scales=(2,), feature_pool=3, plus_unpooled=True, top_fraction=0.01),
    Scoring(scales=(1, 2), feature_pool=3, plus_unpooled=True, top_fraction=0.01),
]


def format_variants(rows: list[dict], part: str = "tune") -> str:
    """Per product (and the mean), per scoring variant: image AUROC on `part` at every epoch."""
    with_variants = [r for r in rows if "variants" in r]
    if not with_variants:
        return ""
    first = with_variants[0]["variants"]
    labels = list(first)
    keys = sorted(k for k in next(iter(first.values())) if k.endswith(f"/{part}"))
    header = f"{'scoring':<26}" + "".join(f" ep{r['epoch']:>3}" for r in with_variants)
    lines = []
    for key in keys:
        lines += [f"{key}: image AUROC (%) per epoch", header]
        for label in labels:
            values = "".join(
                f" {100 * r['variants'][label].get(key, float('nan')):5.1f}" for r in with_variants
            )
            lines.append(f"{label:<26}{values}")
        lines.append("")
    return "\n".join(lines)


def _read_journal(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["trial"], []).append(row)
    return rows


def format_sweep(rows: dict[str, list[dict]]) -> str:
    """Per trial: the epoch each checkpoint rule would keep, and the best epoch on tune.

    "kept" is the authors' rule (lowest mean map of held-out normals), "synth" the
    best AUROC against defects drawn on held-out normals; neither sees a real defect.
    """
    lines = [
        f"{'trial':<22} {'epochs':>6} {'kept ep':>7} {'tune':>6} {'holdout':>7} "
        f"{'synth ep':>8} {'tune':>6} {'holdout':>7} "
        f"{'best tune ep':>12} {'tune':>6} {'holdout':>7}"
    ]
    for name, history in rows.items():
        if not history:
            continue
        kept = min(history, key=lambda r: r["val_mean_map"])
        synth = max(history, key=lambda r: r.get("synthetic_auroc", 0.0))
        best = max(history, key=lambda r: r["mean/tune"])
        lines.append(
            f"{name:<22} {len(history):>6} {kept['epoch']:>7} "
            f"{kept['mean/tune']:>6.3f} {kept['mean/holdout']:>7.3f} "
            f"{synth['epoch']:>8} {synth['mean/tune']:>6.3f} {synth['mean/holdout']:>7.3f} "
            f"{best['epoch']:>12} {best['mean/tune']:>6.3f} {best['mean/holdout']:>7.3f}"
        )
    return "\n".join(lines)
