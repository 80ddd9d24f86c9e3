"""Defects drawn onto held-out normal images: a checkpoint rule that needs no labelled defect.

Which epoch to keep, and whether a candidate may go live, needs a measure of
how well a student separates defects from normal parts. The mean anomaly map
of held-out normals measures only the second half (it keeps improving while
the separation of thin, faint defects peaks early and then fades as the
student learns to imitate the teacher everywhere). Real defects are rare and
must not be used for choosing. So defects are made: on every held-out normal,
one of

- a thin line (1-3 px, a scratch or a crack), darker or brighter than the part;
- a cut-paste patch (a piece of the same image moved and flipped elsewhere);
- a smooth noise blob blended in (a stain, uneven grinding),

and the score is the image AUROC of the held-out normals against their
defective copies. Deterministic for a seed.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("line", "cut_paste", "blob")


def thin_line(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random polyline 1-3 px wide, clearly darker or brighter than where it lies."""
    out = image.copy()
    h, w = image.shape[:2]
    points = [(int(rng.integers(0, w)), int(rng.integers(0, h)))]
    for _ in range(int(rng.integers(1, 4))):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.1, 0.35) * min(h, w)
        x, y = points[-1]
        points.append((int(x + length * np.cos(angle)), int(y + length * np.sin(angle))))
    level = float(image.mean())
    shade = level - rng.uniform(40, 90) if level > 110 else level + rng.uniform(40, 90)
    colour = tuple(float(np.clip(shade, 0, 255)) for _ in range(3))
    cv2.polylines(out, [np.array(points, np.int32)], False, colour, int(rng.integers(1, 4)))
    return out


def cut_paste(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A patch of the image, flipped, pasted elsewhere."""
    out = image.copy()
    h, w = image.shape[:2]
    ph, pw = (int(rng.uniform(0.06, 0.18) * d) for d in (h, w))
    sy, sx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    ty, tx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = image[sy : sy + ph, sx : sx + pw][::-1, ::-1]
    out[ty : ty + ph, tx : tx + pw] = patch
    return out


def blob(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise blended into an elliptic region (a stain, uneven grinding)."""
    h, w = image.shape[:2]
    noise = cv2.resize(rng.uniform(-1, 1, (6, 6)).astype(np.float32), (w, h))
    mask = np.zeros((h, w), np.float32)
    centre = (int(rng.integers(w // 8, w - w // 8)), int(rng.integers(h // 8, h - h // 8)))
    axes = (int(rng.uniform(0.08, 0.2) * w), int(rng.uniform(0.05, 0.15) * h))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(axes) / 4)
    delta = (noise * rng.uniform(35, 70))[..., None] * mask[..., None]
    return np.clip(image.astype(np.float32) + delta, 0, 255).astype(np.uint8)


_DRAW = {"line": thin_line, "cut_paste": cut_paste, "blob": blob}


def draw_on_some(images: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of the (N, H, W, 3) batch with a random defect drawn on each image with
    probability `fraction` (the denoising student's input, trainer/learning/train.py)."""
    out = images.copy()
    for i in np.flatnonzero(rng.random(len(images)) < fraction):
        out[i] = _DRAW[KINDS[int(rng.integers(len(KINDS)))]](images[i], rng)
    return out


def make_anomalies(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """One defective copy of every (N, H, W, 3) uint8 image, kinds in turn; and the kinds."""
    rng = np.random.default_rng(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(len(images))]
    out = np.stack([_DRAW[k](img, rng) for img, k in zip(images, kinds, strict=True)])
    return out, kinds
