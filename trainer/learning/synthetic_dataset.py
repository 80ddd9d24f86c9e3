"""A procedural "factory line": products with normal variation and synthetic defects.

It writes a dataset in MVTec layout with pixel masks, so the demo and the tests can
train and evaluate without licensed data. Each product has its own look (a metal
washer, a woven tile, a printed label); defects are scratches, holes, stains and
missing material, drawn at random places and sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "hole", "stain", "missing")


def _washer(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey ring on a dark belt, jittered position, radius and lighting."""
    img = np.full((size, size, 3), 40 + rng.integers(0, 15), np.uint8)
    c = size // 2 + rng.integers(-size // 20, size // 20 + 1, 2)
    r = int(size * (0.36 + rng.uniform(-0.02, 0.02)))
    shade = int(170 + rng.integers(-15, 16))
    cv2.circle(img, (int(c[0]), int(c[1])), r, (shade, shade, shade + 10), -1, cv2.LINE_AA)
    cv2.circle(img, (int(c[0]), int(c[1])), r // 3, (40, 40, 40), -1, cv2.LINE_AA)
    part = np.zeros((size, size), np.uint8)
    cv2.circle(part, (int(c[0]), int(c[1])), r, 1, -1)
    cv2.circle(part, (int(c[0]), int(c[1])), r // 3, 0, -1)
    return img, part.astype(bool)


def _tile(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Brown woven texture filling the frame, random phase and brightness."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 12
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(x / period * np.pi + phase[0]) * np.sin(y / period * np.pi + phase[1])
    base = 120 + 25 * weave + rng.normal(0, 4, (size, size)) + rng.integers(-10, 11)
    img = np.stack([base * 1.1, base * 0.85, base * 0.6], -1)
    return np.clip(img, 0, 255).astype(np.uint8), np.ones((size, size), bool)


def _label(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """White label with blue stripes on a grey box, slightly shifted."""
    img = np.full((size, size, 3), 150 + rng.integers(-8, 9), np.uint8)
    off = rng.integers(-size // 25, size // 25 + 1, 2)
    x0, y0 = size // 5 + off[0], size // 4 + off[1]
    x1, y1 = x0 + size * 3 // 5, y0 + size // 2
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), (235, 235, 230), -1)
    for k in range(4):
        yy = int(y0 + (k + 1) * (y1 - y0) / 5)
        cv2.line(img, (int(x0) + 6, yy), (int(x1) - 6, yy), (40, 70, 170), max(1, size // 64))
    part = np.zeros((size, size), bool)
    part[int(y0) : int(y1), int(x0) : int(x1)] = True
    return img, part


PRODUCTS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {
    "washer": _washer,
    "tile": _tile,
    "label": _label,
}


def add_defect(
    img: np.ndarray, part: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect on the part; returns the image and its binary mask."""
    size = img.shape[0]
    out = img.copy()
    mask = np.zeros((size, size), np.uint8)
    ys, xs = np.nonzero(part)
    i = rng.integers(0, len(ys))
    cx, cy = int(xs[i]), int(ys[i])
    scale = size / 64
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(10, 20) * scale
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        p0, p1 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        thickness = max(1, int(scale))
        cv2.line(out, p0, p1, (235, 235, 235), thickness, cv2.LINE_AA)
        cv2.line(mask, p0, p1, 1, thickness + 1)
    elif kind == "hole":
        r = max(2, int(rng.uniform(2.5, 5) * scale))
        cv2.circle(out, (cx, cy), r, (10, 10, 10), -1, cv2.LINE_AA)
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif kind == "stain":
        r = max(3, int(rng.uniform(4, 8) * scale))
        blob = np.zeros((size, size), np.float32)
        cv2.circle(blob, (cx, cy), r, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), r / 3)
        colour = np.array([90, 140, 40], np.float32)
        out = (out * (1 - 0.7 * blob[..., None]) + colour * 0.7 * blob[..., None]).astype(np.uint8)
        mask = (blob > 0.25).astype(np.uint8)
    elif kind == "missing":
        w, h = (max(3, int(rng.uniform(5, 10) * scale)) for _ in range(2))
        background = np.median(img[~part], axis=0) if (~part).any() else np.array([30, 30, 30])
        cv2.rectangle(out, (cx - w, cy - h), (cx + w, cy + h), background.tolist(), -1)
        cv2.rectangle(mask, (cx - w, cy - h), (cx + w, cy + h), 1, -1)
        mask &= part.astype(np.uint8)
    else:
        raise ValueError(f"unknown defect {kind!r}")
    return out, mask.astype(bool)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def generate(
    root: Path,
    products: tuple[str, ...] = tuple(PRODUCTS),
    size: int = 128,
    train: int = 40,
    test_good: int = 8,
    test_per_defect: int = 4,
    seed: int = 0,
) -> Path:
    """Write an MVTec-layout dataset under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name in products:
        draw = PRODUCTS[name]
        base = root / name
        for i in range(train):
            _write(base / "train" / "good" / f"{i:03d}.png", draw(rng, size)[0])
        for i in range(test_good):
            _write(base / "test" / "good" / f"{i:03d}.png", draw(rng, size)[0])
        for defect in DEFECTS:
            for i in range(test_per_defect):
                img, part = draw(rng, size)
                img, mask = add_defect(img, part, defect, rng)
                _write(base / "test" / defect / f"{i:03d}.png", img)
                m = base / "ground_truth" / defect / f"{i:03d}_mask.png"
                m.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(m), mask.astype(np.uint8) * 255)
    return root
