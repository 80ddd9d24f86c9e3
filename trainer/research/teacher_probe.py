"""Teacher nearest-neighbour probe: how well do the frozen teacher's own features separate defects?

Why it exists: a student–teacher model flags a patch where the student fails to
reproduce the teacher, so it can only find defects that the teacher's features
tell apart from normal patches. This probe measures that directly, with no
training: a memory of teacher patch features from normal images, and each test
image scored by its patch farthest from that memory (PatchCore-style, without
coreset selection). Its image AUROC is the ceiling a student–teacher with this
teacher should approach; comparing backbones and input sizes here says whether a
larger teacher or more pixels could raise that ceiling before anything is trained.

Per product and per (backbone, size): the stride-8 and stride-16 teacher features,
each 3 × 3 average-pooled (stride 1, padding 1), stride 16 bilinearly upsampled to
the stride-8 grid, each L2-normalised over channels, concatenated; the memory is
`--memory` patch vectors drawn at random (seeded) from train/good; a test image's
score is the largest distance of one of its patches to its nearest memory vector.

    python -m trainer.research.teacher_probe --data DIR [--backbones efficientnet_lite0 ...]
        [--sizes 256 384] [--memory 40000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.network import StudentTeacher
from trainer.learning.data import (
    GOOD,
    TEST_PARTS,
    Product,
    TestImage,
    discover,
    read_images,
    split_test,
)
from trainer.learning.detection_metrics import auroc

DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass
class ProbeResult:
    backbone: str
    size: int
    product: str
    auroc: dict[str, float]  # "tune", "holdout", "all"
    per_defect: dict[str, float]  # each defect type vs good, all test images
    seconds_per_image: float  # teacher + feature pooling, per image
    memory_bytes: int
    extras: dict[str, float] = field(default_factory=dict)


def patch_features(model: StudentTeacher, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, P, C) L2-normalised stride-8 + stride-16 patch features on the stride-8 grid."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    _, f8, f16 = model.teacher_features(model.normalise(x))
    with torch.no_grad():
        f8 = F.avg_pool2d(f8.float(), 3, stride=1, padding=1)
        f16 = F.avg_pool2d(f16.float(), 3, stride=1, padding=1)
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        feats = torch.cat([F.normalize(f8, dim=1), F.normalize(f16, dim=1)], dim=1)
    return feats.flatten(2).transpose(1, 2).contiguous()


def timed_features(
    model: StudentTeacher,
    paths: list[Path],
    size: int,
    batch: int,
    device: torch.device,
    desc: str,
) -> Iterator[tuple[int, torch.Tensor, float]]:
    """Per batch of images: its first index, its patch features, the teacher's seconds."""
    for start in tqdm(range(0, len(paths), batch), desc=desc, leave=False, unit="batch"):
        images = read_images(paths[start : start + batch], size)
        t0 = time.perf_counter()
        feats = patch_features(model, images, device)
        yield start, feats, time.perf_counter() - t0


def build_memory(
    model: StudentTeacher,
    paths: list[Path],
    size: int,
    n_memory: int,
    seed: int,
    batch: int,
    device: torch.device,
    desc: str,
) -> tuple[torch.Tensor, float, int]:
    """`n_memory` random patch vectors of the normal images (all, if fewer), the teacher
    seconds spent, and the images fed."""
    rng = np.random.default_rng(seed)
    chosen: np.ndarray | None = None
    parts: list[torch.Tensor] = []
    seconds = 0.0
    for start, feats, spent in timed_features(model, paths, size, batch, device, desc):
        seconds += spent
        n_patches = feats.shape[1]
        if chosen is None:  # the grid is known now: draw flat (image, patch) indices once
            total = len(paths) * n_patches
            chosen = np.sort(rng.choice(total, size=min(n_memory, total), replace=False))
        lo, hi = start * n_patches, (start + len(feats)) * n_patches
        here = chosen[(chosen >= lo) & (chosen < hi)] - lo
        parts.append(feats.reshape(-1, feats.shape[-1])[torch.from_numpy(here).to(device)])
    return torch.cat(parts), seconds, len(paths)


def nearest_distance(queries: torch.Tensor, memory: torch.Tensor, chunk: int) -> torch.Tensor:
    """Distance of each query row to its nearest memory row, `chunk` queries at a time."""
    out = torch.empty(len(queries), device=queries.device)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        out[start : start + chunk] = torch.cdist(block, memory).amin(dim=1)
    return out


def score_tests(
    model: StudentTeacher,
    items: list[TestImage],
    memory: torch.Tensor,
    size: int,
    batch: int,
    chunk: int,
    device: torch.device,
    desc: str,
) -> tuple[np.ndarray, float]:
    """Image scores (max over patches of the nearest-memory distance) and teacher seconds."""
    scores: list[np.ndarray] = []
    seconds = 0.0
    paths = [item.path for item in items]
    for _, feats, spent in timed_features(model, paths, size, batch, device, desc):
        seconds += spent
        n, p, c = feats.shape
        with torch.no_grad():
            distance = nearest_distance(feats.reshape(n * p, c), memory, chunk)
        scores.append(distance.reshape(n, p).amax(dim=1).cpu().numpy())
    return np.concatenate(scores), seconds


def probe_product(
    model: StudentTeacher,
    backbone: str,
    product: Product,
    size: int,
    n_memory: int,
    seed: int,
    batch: int,
    chunk: int,
    device: torch.device,
) -> ProbeResult:
    tag = f"{backbone} {size} {product.name}"
    memory, train_s, n_train = build_memory(
        model, product.normals, size, n_memory, seed, batch, device, f"memory {tag}"
    )
    scores, test_s = score_tests(
        model, product.test, memory, size, batch, chunk, device, f"test {tag}"
    )
    by_path = {item.path: float(s) for item, s in zip(product.test, scores, strict=True)}

    def area(items: list[TestImage]) -> float:
        labels = np.array([item.anomalous for item in items])
        return 100.0 * auroc(labels, np.array([by_path[item.path] for item in items]))

    aurocs = {part: area(split_test(product.test, part)) for part in TEST_PARTS}
    aurocs["all"] = area(product.test)
    goods = [item for item in product.test if item.defect == GOOD]
    per_defect = {
        defect: area(goods + [item for item in product.test if item.defect == defect])
        for defect in sorted({item.defect for item in product.test} - {GOOD})
    }
    return ProbeResult(
        backbone=backbone,
        size=size,
        product=product.name,
        auroc=aurocs,
        per_defect=per_defect,
        seconds_per_image=(train_s + test_s) / (n_train + len(product.test)),
        memory_bytes=memory.numel() * memory.element_size(),
        extras={"memory_vectors": float(len(memory)), "dims": float(memory.shape[1])},
    )


def table(results: list[ProbeResult]) -> str:
    head = (
        "| backbone | size | product | tune | holdout | all | per defect (all test) "
        "| s/image | memory bytes |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        defects = ", ".join(f"{d} {v:.1f}" for d, v in r.per_defect.items())
        lines.append(
            f"| {r.backbone} | {r.size} | {r.product} | {r.auroc['tune']:.1f} "
            f"| {r.auroc['holdout']:.1f} | {r.auroc['all']:.1f} | {defects} "
            f"| {r.seconds_per_image:.4f} | {r.memory_bytes:,} "
            f"({int(r.extras['memory_vectors'])} x {int(r.extras['dims'])} fp32) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m trainer.research.teacher_probe",
        description="Nearest-neighbour probe of the frozen teacher's features (no training).",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset root in MVTec layout")
    p.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    p.add_argument("--sizes", nargs="+", type=int, default=[256])
    p.add_argument("--memory", type=int, default=40000, help="patch vectors kept per product")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chunk", type=int, default=1024, help="test patches per cdist call")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    products = discover(args.data)
    results: list[ProbeResult] = []
    for backbone in args.backbones:
        model = StudentTeacher.pretrained(backbone).to(device).eval()
        for size in args.sizes:
            for product in products:
                result = probe_product(
                    model,
                    backbone,
                    product,
                    size,
                    args.memory,
                    args.seed,
                    args.batch_size,
                    args.chunk,
                    device,
                )
                results.append(result)
                tqdm.write(table([result]).splitlines()[-1])
    print(table(results))


if __name__ == "__main__":
    main()
