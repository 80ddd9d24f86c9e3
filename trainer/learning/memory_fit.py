"""Fitting a trained student–teacher's memory head (`model.memory_head`).

Two choices are made here, both from normal images only:
- which teacher patches the memory holds: per product, a greedy k-centre coreset
  (PatchCore's) of patches drawn from its training normals, so that a few thousand
  rows cover the spread of what normal looks like, rare appearances included, which a
  random draw of the same size misses;
- how the memory's map is weighed against the student–teacher's: per product, by the
  ratio of the two maps' image-score standard deviations on that product's held-out
  normals, so that each counts in units of its own normal variation. Measured on the
  tiles, one weight for all products (both maps standardised over every product's
  normals together) lost 2.3 points of image AUROC against a weight per product:
  a bottle's scores spread differently from a tile's.

Nothing in a test set is looked at. The held-out normals that weigh the maps are the
ones the thresholds are then calibrated on, as for the student–teacher alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import structlog
import torch
from tqdm import tqdm

from model.anomaly_map import default_sigma, image_scores, score_pyramids
from model.memory_head import as_rows, memory_map, patch_features
from model.network import StudentTeacher
from schemas.manifest import MemoryHead, ProductMemory

log = structlog.get_logger(__name__)

#: Patches drawn from each product's training normals before the coreset is chosen
#: among them (the selection's cost grows with candidates × rows).
CANDIDATES = 60_000
#: Dimensions of the random projection the coreset's distances are computed in.
PROJECTION = 64
#: The range a product's weight is held to. Measured weights on real products lie between
#: 1.0 and 2.3; far outside, the held-out normals are too few or too alike to weigh by
#: (one image, or copies: a spread near zero), and the weight would be noise.
WEIGHT_RANGE = (0.1, 10.0)


def greedy_coreset(rows: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Indices of `k` rows, each the farthest from those chosen before (k-centre greedy).

    Distances are taken in a random `PROJECTION`-dimensional projection (Johnson–
    Lindenstrauss: close enough to choose by, several times cheaper); the first row
    is drawn with `seed`.
    """
    k = min(k, len(rows))
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(rows.shape[1], PROJECTION, generator=generator) / math.sqrt(PROJECTION)
    projected = rows @ projection.to(rows.device)
    chosen = [int(torch.randint(len(rows), (1,), generator=generator))]
    nearest = (projected - projected[chosen[0]]).pow(2).sum(1)
    for _ in range(k - 1):
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, (projected - projected[index]).pow(2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


@torch.no_grad()
def fit_memory_head(
    network: StudentTeacher,
    train_images: Mapping[str, np.ndarray],
    val_images: Mapping[str, np.ndarray],
    patches: int,
    stride: int = 16,
    seed: int = 0,
    batch: int = 32,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Give `network` a memory of `patches` rows per product; returns the fused image
    scores of each product's held-out normals (what its threshold is calibrated on).

    `train_images` and `val_images`: per product, (N, S, S, 3) uint8 RGB.
    """
    network.drop_memory()
    network.eval()
    chosen = {
        product: choose_rows(network, images, patches, stride, seed, batch, progress, product)
        for product, images in train_images.items()
    }
    memory = torch.cat(list(chosen.values())).to(network.mean.device)
    weight = {
        product: _weight(network, memory, stride, val_images[product], batch, product)
        for product in chosen
    }
    owner = torch.cat([torch.full((len(rows),), i) for i, rows in enumerate(chosen.values())])
    weights = torch.tensor([weight[product] for product in chosen])[owner]
    head = MemoryHead(
        patches=len(memory),
        channels=memory.shape[1],
        stride=stride,
        products={
            product: ProductMemory(rows=len(rows), weight=weight[product])
            for product, rows in chosen.items()
        },
    )
    network.set_memory(memory, weights.to(memory.device), head)
    log.info("memory head fitted", rows=len(memory), weights=weight)
    # calibration scores as the line will see them: the served network, fused map and all
    return {
        product: served_scores(network, images, batch) for product, images in val_images.items()
    }


def choose_rows(
    network: StudentTeacher,
    images: np.ndarray,
    patches: int,
    stride: int,
    seed: int,
    batch: int = 32,
    progress: bool = True,
    product: str = "",
) -> torch.Tensor:
    """`patches` rows (on the CPU) for one product's training normals: `CANDIDATES` patch
    vectors drawn evenly from its images, then their greedy k-centre coreset."""
    rng = np.random.default_rng(seed)
    per_image = math.ceil(CANDIDATES / max(1, len(images)))
    candidates = []
    for teacher in _teacher_batches(network, images, batch, product, progress):
        rows = as_rows(patch_features(teacher, stride))
        keep = rng.permutation(len(rows))[: per_image * len(teacher[0])]
        candidates.append(rows[torch.from_numpy(keep).to(rows.device)].cpu())
    rows = torch.cat(candidates)
    chosen = rows[greedy_coreset(rows, patches, seed)]
    log.info("memory rows chosen", product=product, rows=len(chosen), of=len(rows))
    return chosen


def _weight(
    network: StudentTeacher,
    memory: torch.Tensor,
    stride: int,
    images: np.ndarray,
    batch: int,
    product: str,
) -> float:
    """std of the student–teacher image scores / std of the memory's (unweighted), on one
    product's held-out normals, held to `WEIGHT_RANGE`."""
    device, size = network.mean.device, images.shape[1]
    unit = torch.ones(len(memory), device=device)
    st, mem = [], []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).to(device)
        x = network.normalise(chunk)
        teacher = network.teacher_features(x)
        student = network.student_features(x)
        st.append(score_pyramids(teacher, student, (size, size), network.scoring).scores)
        nearest = memory_map(teacher, memory, unit, stride, (size, size), default_sigma(size))
        mem.append(image_scores(nearest, network.scoring))
    ratio = _std(st) / _std(mem)
    weight = min(max(ratio, WEIGHT_RANGE[0]), WEIGHT_RANGE[1])
    if weight != ratio:
        log.warning("memory weight held to its range", product=product, ratio=ratio)
    return weight


@torch.no_grad()
def served_scores(network: StudentTeacher, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Image scores of (N, S, S, 3) uint8 images as the network serves them."""
    device = network.mean.device
    scores = [
        network(torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).to(device))
        .scores.cpu()
        .numpy()
        for start in range(0, len(images), batch)
    ]
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def _teacher_batches(
    network: StudentTeacher, images: np.ndarray, batch: int, product: str, progress: bool
) -> Iterator[list[torch.Tensor]]:
    """The teacher's pyramid of each batch of `images`, with a progress bar."""
    device = network.mean.device
    starts = range(0, len(images), batch)
    for start in tqdm(starts, desc=f"{product} memory", disable=not progress, leave=False):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).to(device)
        yield network.teacher_features(network.normalise(x))


def _std(scores: list[torch.Tensor]) -> float:
    """The std of the scores; a floor keeps empty, one-image or constant sets usable."""
    values = torch.cat(scores) if scores else torch.zeros(0)
    return max(float(values.std()) if len(values) > 1 else 0.0, 1e-6)
