"""Datasets in MVTec layout: <root>/<product>/train/good, test/<defect>, ground_truth/<defect>.

Every product folder is one class of the ONE multi-class model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from model.images import fit_to_size, load_image

# A .bmp is listed so that it fails loudly when read (a frame is JPEG or PNG: convert it)
# instead of being silently left out of a dataset.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
GOOD = "good"


@dataclass(frozen=True)
class TestImage:
    path: Path
    defect: str  # "good" for normal images
    mask: Path | None  # None: all-zero mask

    @property
    def anomalous(self) -> bool:
        return self.defect != GOOD


@dataclass
class Product:
    name: str
    root: Path
    normals: list[Path] = field(default_factory=list)
    test: list[TestImage] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def discover(root: Path) -> list[Product]:
    """Products (subfolders with train/good) of a dataset root, sorted by name."""
    root = Path(root)
    products = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        normals = list_images(folder / "train" / GOOD)
        if not normals:
            continue
        product = Product(folder.name, folder, normals=normals)
        test_root = folder / "test"
        if test_root.is_dir():
            for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir()):
                for image in list_images(defect_dir):
                    mask = None
                    if defect_dir.name != GOOD:
                        candidate = (
                            folder / "ground_truth" / defect_dir.name / f"{image.stem}_mask.png"
                        )
                        mask = candidate if candidate.is_file() else None
                    product.test.append(TestImage(image, defect_dir.name, mask))
        products.append(product)
    if not products:
        raise FileNotFoundError(f"{root}: no <product>/train/good folders with images")
    return products


def split_normals(
    paths: list[Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Seeded split of one product's normal images into train and held-out validation."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = max(1, round(len(paths) * val_fraction)) if len(paths) > 1 else 0
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def read_rgb(path: Path, size: int) -> np.ndarray:
    """An image file as (size, size, 3) uint8 RGB, exactly as the worker would judge it.

    The worker's decoder (`model.images.load_image`: no EXIF rotation, grey
    replicated to 3 channels) and its resize (`fit_to_size`): a model learns,
    is calibrated and is gated on the pixels it will see on the line.
    """
    try:
        return fit_to_size(load_image(path), size)
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable image: {exc}") from exc


def read_images(paths: list[Path], size: int) -> np.ndarray:
    return (
        np.stack([read_rgb(p, size) for p in paths])
        if paths
        else np.zeros((0, size, size, 3), np.uint8)
    )


def read_mask(path: Path | None, size: int) -> np.ndarray:
    """Binary (size, size) mask; a missing mask is all normal."""
    if path is None:
        return np.zeros((size, size), bool)
    try:  # the images' loader: a mask is oriented as the image it outlines
        mask = cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY)
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable mask: {exc}") from exc
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the names and bytes of a set of images: identifies a training snapshot."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.name).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


TEST_PARTS = ("tune", "holdout")


def split_test(images: list[TestImage], part: str) -> list[TestImage]:
    """One half of a product's labelled test images, stratified by defect type.

    Hyperparameters are chosen on the "tune" half and confirmed on the "holdout"
    half, so no choice is ever made on the images it is reported on. Within each
    defect type (and "good"), sorted by file name, even positions are "tune" and
    odd positions "holdout": deterministic, and independent of any seed.
    """
    if part not in TEST_PARTS:
        raise ValueError(f"test part must be one of {TEST_PARTS}, not {part!r}")
    wanted = TEST_PARTS.index(part)
    by_defect: dict[str, list[TestImage]] = {}
    for image in images:
        by_defect.setdefault(image.defect, []).append(image)
    return [
        image
        for defect in sorted(by_defect)
        for i, image in enumerate(sorted(by_defect[defect], key=lambda t: t.path.name))
        if i % 2 == wanted
    ]
