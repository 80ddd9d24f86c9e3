"""Pictures a person would rather see than read: ROC curves, score histograms, heatmaps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: trainers run on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainer.learning.data import read_rgb  # noqa: E402
from trainer.learning.detection_metrics import auroc, roc_curve  # noqa: E402


def roc_figure(judged: dict[str, tuple], path: Path) -> Path:
    """Image-level ROC curve of each product, AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (product, scores, _maps, _masks) in judged.items():
        labels = np.array([item.anomalous for item in product.test])
        fpr, tpr = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {100 * auroc(labels, scores):.1f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="image ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def score_histograms(
    judged: dict[str, tuple], thresholds: dict[str, float], path: Path, bins: int = 40
) -> Path:
    """Per product: image scores of the normal and the defective test images, and the
    shipped threshold drawn on them (what passes, what is stopped)."""
    fig, axes = plt.subplots(1, len(judged), figsize=(5 * len(judged), 3.2), squeeze=False)
    for ax, (name, (product, scores, _maps, _masks)) in zip(axes[0], judged.items(), strict=True):
        labels = np.array([item.anomalous for item in product.test])
        edges = np.histogram_bin_edges(scores, bins=bins)
        ax.hist(scores[~labels], bins=edges, alpha=0.6, label=f"normal ({(~labels).sum()})")
        ax.hist(scores[labels], bins=edges, alpha=0.6, label=f"defective ({labels.sum()})")
        threshold = thresholds[name]
        ax.axvline(threshold, color="k", lw=1.2, ls="--", label=f"threshold {threshold:.3g}")
        ax.set(xlabel="image score", ylabel="test images", title=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cases(product, scores: np.ndarray, k: int) -> list[tuple[int, str]]:
    """Best and worst cases: the k anomalies scored highest and lowest, the k normals scored
    highest (the false alarms a plant would see first)."""
    labels = np.array([item.anomalous for item in product.test])
    anomalous = np.flatnonzero(labels)
    normal = np.flatnonzero(~labels)
    by_score = anomalous[np.argsort(-scores[anomalous])]
    picks = [(i, "best: caught") for i in by_score[:k]]
    picks += [(i, "worst: missed") for i in by_score[::-1][:k]]
    picks += [(i, "worst: normal, high") for i in normal[np.argsort(-scores[normal])][:k]]
    return picks


def heatmap_grid(judged: dict[str, tuple], path: Path, k: int = 3) -> Path:
    """One row per product: overlays of the best and worst cases, defect outline in white."""
    rows = len(judged)
    cols = 3 * k
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.3 * rows), squeeze=False)
    # colour range per product: from a typical normal pixel to a high image score
    vmin = {name: float(np.median(m)) for name, (_, _, m, _) in judged.items()}
    vmax = {name: float(np.percentile(s, 99)) for name, (_, s, _, _) in judged.items()}
    for r, (name, (product, scores, maps, masks)) in enumerate(judged.items()):
        for c, (i, caption) in enumerate(_cases(product, scores, k)):
            ax = axes[r][c]
            item = product.test[i]
            ax.imshow(read_rgb(item.path, maps.shape[-1]))
            ax.imshow(maps[i], cmap="jet", alpha=0.45, vmin=vmin[name], vmax=vmax[name])
            if masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="white", linewidths=0.8)
            ax.set_title(f"{caption}\n{item.defect} {scores[i]:.2f}", fontsize=7)
            ax.axis("off")
        axes[r][0].text(
            -10, maps.shape[-1] / 2, name, rotation=90, va="center", ha="right", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep_figure(rows: dict[str, list[dict]], path: Path) -> Path:
    """Mean image AUROC on the tune half per epoch, one line per trial; holdout dotted."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in rows.items():
        epochs = [r["epoch"] for r in history]
        (line,) = ax.plot(epochs, [100 * r["mean/tune"] for r in history], marker="o", label=name)
        ax.plot(epochs, [100 * r["mean/holdout"] for r in history], ":", color=line.get_color())
        if all("synthetic_auroc" in r for r in history):  # what the "synthetic" rule sees
            ax.plot(
                epochs,
                [100 * r["synthetic_auroc"] for r in history],
                "--",
                color=line.get_color(),
                alpha=0.6,
            )
    ax.set(
        xlabel="epoch",
        ylabel="mean image AUROC (%)",
        title="sweep: tune (solid), holdout (dotted), drawn defects (dashed)",
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def epochs_figure(history: list[dict], path: Path, title: str) -> Path:
    """One trial: each product's image AUROC per epoch on the tune half (holdout dotted),
    the held-out normals' mean map on a second axis, and the epoch the authors' rule
    (lowest mean map) keeps marked, so that the rule can be judged against the labels."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    epochs = [r["epoch"] for r in history]
    products = sorted({k.split("/")[0] for k in history[0] if k.endswith("/tune")} - {"mean"})
    for product in products:
        (line,) = ax.plot(
            epochs, [100 * r[f"{product}/tune"] for r in history], marker="o", label=product
        )
        ax.plot(
            epochs, [100 * r[f"{product}/holdout"] for r in history], ":", color=line.get_color()
        )
    kept = min(history, key=lambda r: r["val_mean_map"])
    ax.axvline(kept["epoch"], color="grey", ls="--", lw=1)
    ax.annotate(f"kept: epoch {kept['epoch']}", (kept["epoch"], ax.get_ylim()[0]), fontsize=7)
    ax.set(xlabel="epoch", ylabel="image AUROC (%)", title=title)
    ax.grid(alpha=0.3)
    other = ax.twinx()
    other.plot(epochs, [r["val_mean_map"] for r in history], color="black", alpha=0.4, lw=1)
    other.set_ylabel("held-out normals: mean map", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
