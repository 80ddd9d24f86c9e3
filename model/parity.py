"""Parity: a compiled runtime must judge as torch fp32 does, or it is not served.

A runtime (`model.runtimes`) runs an export of the network, not the
network: a wrong export, an operator a runtime implements differently, or a
precision that loses too much would change verdicts on the line without anyone
seeing it. So the same frames are judged by torch fp32 and by the runtime, and:

- every image score is within `SCORE_TOLERANCE` (1 %) of the product's threshold
  of torch's score (the threshold sets the scale of what matters);
- every anomaly map is within `MAP_TOLERANCE` (5 %) of the threshold, pixel by
  pixel (a map is shown to operators, a score decides: maps get more room, and
  bf16 is coarser pixel by pixel than on the maximum);
- the verdict (score > threshold, as the worker decides) agrees on every frame whose
  torch score lies farther from the threshold than `SCORE_TOLERANCE`. A part that
  scores within the tolerance of the threshold is a coin toss for any two
  implementations of the same arithmetic (summation order alone moves the last
  digits); holding those to agreement would refuse a sound export whenever a held-out
  image happens to land on the threshold, and accepting a runtime whose scores are
  within tolerance already accepts that band.

The worker checks a release's export on a fixed set of synthetic frames when it
loads it (`model.loading.load_model`); the trainer checks it on held-out
images before publishing a release (`trainer.service.retrain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.runtime import InspectionModel
from model.runtimes import EXPORT_RUNTIMES, ONNX_FILE, open_export

#: Largest allowed |score - torch fp32 score|, as a fraction of the product's threshold.
SCORE_TOLERANCE = 0.01
#: Largest allowed per-pixel |map - torch fp32 map|, as a fraction of the product's threshold.
MAP_TOLERANCE = 0.05


@dataclass
class ParityReport:
    """What a runtime did differently from torch fp32 on the same frames."""

    runtime: str
    precision: str
    frames: int
    max_score_error: float = 0.0  # as a fraction of the threshold
    max_map_error: float = 0.0  # as a fraction of the threshold
    disagreements: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.disagreements

    def summary(self) -> str:
        head = (
            f"{self.runtime} {self.precision} on {self.frames} frames: score error "
            f"{100 * self.max_score_error:.3f} %, map error {100 * self.max_map_error:.3f} % "
            "of the threshold"
        )
        if self.ok:
            return head
        shown = "; ".join(self.disagreements[:5])
        more = len(self.disagreements) - 5
        return f"{head}; {len(self.disagreements)} disagreements: {shown}" + (
            f" (+{more} more)" if more > 0 else ""
        )


def check_parity(
    reference: InspectionModel,
    candidate: InspectionModel,
    frames: Sequence[np.ndarray],
    products: Sequence[str] | None = None,
    batch: int = 8,
) -> ParityReport:
    """Judge `frames` with both models; list every frame where they disagree.

    `products[i]` is frame i's product; without it every frame is held to every
    product's threshold (the strictest check: a synthetic frame has no product).
    """
    known = reference.manifest.products
    report = ParityReport(candidate.runtime, candidate.precision, len(frames))
    for start in range(0, len(frames), batch):
        ref = reference.judge(frames[start : start + batch])
        got = candidate.judge(frames[start : start + batch])
        for offset in range(len(ref.scores)):
            i = start + offset
            names = [products[i]] if products is not None else sorted(known)
            score_diff = abs(float(got.scores[offset]) - float(ref.scores[offset]))
            map_diff = float(np.abs(got.maps[offset] - ref.maps[offset]).max())
            if not np.isfinite(score_diff) or not np.isfinite(map_diff):
                report.disagreements.append(f"frame {i}: not finite")
                continue
            for product in names:
                threshold = known[product].threshold
                scale = abs(threshold) or 1.0
                score_error, map_error = score_diff / scale, map_diff / scale
                report.max_score_error = max(report.max_score_error, score_error)
                report.max_map_error = max(report.max_map_error, map_error)
                problems = []
                if score_error > SCORE_TOLERANCE:
                    problems.append(f"score off by {100 * score_error:.2f} % of the threshold")
                if map_error > MAP_TOLERANCE:
                    problems.append(f"map off by {100 * map_error:.2f} % of the threshold")
                ours, theirs = got.scores[offset] > threshold, ref.scores[offset] > threshold
                on_the_line = abs(float(ref.scores[offset]) - threshold) <= SCORE_TOLERANCE * scale
                if ours != theirs and not on_the_line:
                    problems.append(f"verdict {_verdict(ours)}, torch fp32 says {_verdict(theirs)}")
                if problems:
                    report.disagreements.append(
                        f"frame {i} ({product}, torch {ref.scores[offset]:.4f}, "
                        f"{candidate.runtime} {got.scores[offset]:.4f}): " + ", ".join(problems)
                    )
    return report


def check_export(
    reference: InspectionModel,
    folder: Path,
    frames: Sequence[np.ndarray],
    products: Sequence[str] | None = None,
    runtimes: Sequence[str] = EXPORT_RUNTIMES,
) -> list[ParityReport]:
    """The release gate's check: the export in `folder` through each CPU runtime at fp32,
    against `reference` (the release's network, torch fp32), on real frames."""
    reports = []
    for runtime in runtimes:
        engine = open_export(runtime, Path(folder) / ONNX_FILE, "fp32", device="cpu")
        candidate = InspectionModel(
            reference.network, reference.manifest, device="cpu", engine=engine
        )
        reports.append(check_parity(reference, candidate, frames, products))
    return reports


def smoke_frames(image_size: int, count: int = 5) -> list[np.ndarray]:
    """Fixed synthetic frames for a check at load time, when no real image is at hand:
    black, mid grey, noise, smooth gradients and blobs (the map's range from flat to busy)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:image_size, 0:image_size] / max(1, image_size - 1)
    frames = [
        np.zeros((image_size, image_size, 3), np.uint8),
        np.full((image_size, image_size, 3), 128, np.uint8),
        rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
        (np.stack([x, y, 1 - x], -1) * 255).astype(np.uint8),
    ]
    while len(frames) < count:
        blobs = np.zeros((image_size, image_size, 3))
        for _ in range(8):
            cy, cx, r = rng.random(3) * [1, 1, 0.2]
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (r + 0.02) ** 2))
            blobs += rng.random(3) * blob[..., None]
        frames.append((np.clip(blobs, 0, 1) * 255).astype(np.uint8))
    return frames[:count]


def _verdict(ng: bool) -> str:
    return "ng" if ng else "ok"
