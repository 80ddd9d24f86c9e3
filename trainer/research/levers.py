"""Levers on a trained release, measured post hoc: what a change of scoring would buy.

    python -m trainer.research.levers --model M --data DATA

Per product and lever: image AUROC, per-defect AUROC, and at the split-conformal
threshold from the release's own held-out normals (target 1 %) the false alarms on
test/good and the recall; and the recall at 2 % false alarms with the threshold read
off the test normals (interpolated 98th percentile). Levers: the release as is;
horizontal-flip test-time averaging of image scores; a global branch (a per-product
Gaussian of pooled multi-scale teacher features, Mahalanobis distance) alone and
fused by the ratio of the held-out normals' score spreads, as the memory head is;
both. Nothing is changed in the release: a lever worth having is built into the
network and measured again by `kenpin-trainer eval`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from model.loading import load_network
from trainer.learning.calibrate import conformal_threshold
from trainer.learning.data import discover, read_images
from trainer.learning.detection_metrics import auroc
from trainer.learning.export import release_splits


@torch.no_grad()
def scores(network, images: np.ndarray, flip: bool = False, batch: int = 16) -> np.ndarray:
    """Image scores of (N, S, S, 3) uint8 images; with `flip`, averaged with the mirror's."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2)
        s = network(x).scores
        if flip:
            s = (s + network(torch.flip(x, dims=[3])).scores) / 2
        out.append(s.numpy())
    return np.concatenate(out)


@torch.no_grad()
def pooled(network, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Per image: each teacher scale's per-channel mean and std over the image, concatenated."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2)
        feats = network.teacher_features(network.normalise(x))
        parts = []
        for f in feats:
            f = f.float()
            parts += [f.mean(dim=(2, 3)), f.std(dim=(2, 3))]
        out.append(torch.cat(parts, 1).numpy())
    return np.concatenate(out)


class Gaussian:
    """Mahalanobis distance to the normals' mean, the covariance shrunk towards its trace."""

    def __init__(self, x: np.ndarray, shrink: float = 0.1) -> None:
        self.mean = x.mean(0)
        cov = np.cov(x - self.mean, rowvar=False)
        cov = (1 - shrink) * cov + shrink * np.eye(len(cov)) * np.trace(cov) / len(cov)
        self.inv = np.linalg.inv(cov)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        d = x - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.inv, d))


def report(name: str, product, test_scores: np.ndarray, heldout_scores: np.ndarray) -> None:
    """One line: AUROC, the shipped threshold's false alarms and recall, recall at 2 %."""
    labels = np.array([item.anomalous for item in product.test])
    defects = np.array([item.defect for item in product.test])
    entry = conformal_threshold(heldout_scores, 0.99)
    good = ~labels
    far = (test_scores[good] > entry.threshold).mean()
    recall = (test_scores[labels] > entry.threshold).mean()
    per = {
        str(d): round(
            100 * auroc(labels[good | (defects == d)], test_scores[good | (defects == d)]), 1
        )
        for d in sorted(set(defects) - {"good"})
    }
    # recall at 2 % false alarms on test/good (threshold read off the test normals)
    t2 = np.quantile(test_scores[good], 0.98)
    print(
        f"{product.name:20s} {name:12s} AUROC {100 * auroc(labels, test_scores):5.1f}  "
        f"shipped: FAR {100 * far:4.1f} % recall {100 * recall:5.1f} % "
        f"(expected FAR {100 * entry.expected_false_alarm_rate:.2f} %)  "
        f"recall@2%FAR {100 * (test_scores[labels] > t2).mean():5.1f}  {per}",
        flush=True,
    )


def measure(model_dir: Path, data_dir: Path) -> None:
    """Every lever on every product the release knows, printed as it is measured."""
    started = time.time()
    network, manifest = load_network(model_dir)
    network.eval()
    size = manifest.image_size
    splits = {
        name: (train, val) for name, train, val in release_splits(manifest, model_dir, data_dir)
    }
    for product in discover(data_dir):
        train, val = splits[product.name]
        test = read_images([item.path for item in product.test], size)
        held = read_images(val, size)
        base_test, base_held = scores(network, test), scores(network, held)
        report("release", product, base_test, base_held)
        flip_test, flip_held = scores(network, test, flip=True), scores(network, held, flip=True)
        report("hflip", product, flip_test, flip_held)
        gauss = Gaussian(pooled(network, read_images(train, size)))
        g_test, g_held = gauss(pooled(network, test)), gauss(pooled(network, held))
        report("global only", product, g_test, g_held)
        for base_t, base_h, label in (
            (base_test, base_held, "global"),
            (flip_test, flip_held, "both"),
        ):
            w = base_h.std() / max(g_held.std(), 1e-9)
            report(label, product, base_t + w * g_test, base_h + w * g_held)
        print(f"  ({time.time() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.research.levers", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained release's folder")
    parser.add_argument("--data", type=Path, required=True, help="the data it was trained on")
    args = parser.parse_args(argv)
    measure(args.model, args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
