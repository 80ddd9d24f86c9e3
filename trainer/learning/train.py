"""The training loop: one student for all products, distilled from the frozen teacher.

No augmentation is used, so the teacher's features are computed once per image and
reused every epoch (the teacher is frozen; this removes half of each step).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
import structlog
import torch
from torch import nn
from tqdm import tqdm

from model.anomaly_map import score_pyramids
from model.network import StudentTeacher
from model.runtime import cpu_has_bf16_units, resolve_device
from trainer.learning.config import TrainConfig
from trainer.learning.data import Product, discover, fingerprint, read_images, split_normals
from trainer.learning.dcam import DCAM
from trainer.learning.detection_metrics import auroc
from trainer.learning.losses import distillation_loss
from trainer.learning.memory_fit import fit_memory_head
from trainer.learning.synthetic_anomalies import draw_on_some, make_anomalies

log = structlog.get_logger(__name__)


@dataclass
class Split:
    """Images of one product, as uint8 arrays, with where they came from."""

    product: str
    train: list[Path]
    val: list[Path]


NetworkT = TypeVar("NetworkT", bound=nn.Module)
StateT = TypeVar("StateT")


@dataclass
class TrainResult(Generic[NetworkT, StateT]):
    """What a learner returns, whatever the architecture: the network to release, what
    calibration and the manifest need, and the architecture's own state (`state`)."""

    network: NetworkT
    config: TrainConfig
    best_epoch: int
    val_scores: dict[str, np.ndarray]  # per product, at the best epoch
    history: list[dict]
    seconds: float
    data: dict
    state: StateT
    # what the architecture records about itself in the manifest (backbone, normalisation)
    manifest_fields: dict[str, Any] = field(default_factory=dict)
    # the architecture's own training figures, recorded in the manifest's `training`
    training_record: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudentTeacherState:
    """What training a student–teacher leaves besides the network."""

    dcam: DCAM | None  # the trained attention blocks (None: no DCAM)
    best_val_map: float  # mean map of the held-out normals at the kept epoch


EpochHook = Callable[[dict, StudentTeacher, DCAM], None]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def teacher_pyramid(
    network: StudentTeacher, images: np.ndarray, batch: int = 32
) -> list[torch.Tensor]:
    """The teacher's three feature maps for every image, concatenated per scale."""
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch):
        x = network.normalise(_batch(images[start : start + batch], network.mean.device))
        chunks.append([f.contiguous() for f in network.teacher_features(x)])
    return [torch.cat(scale) for scale in zip(*chunks, strict=True)]


class StudentScores(NamedTuple):
    """What validation reads of the plain student: image scores, and the mean of all maps."""

    scores: np.ndarray
    mean_map: float


@torch.no_grad()
def student_scores(
    network: StudentTeacher,
    images: np.ndarray,
    teacher: list[torch.Tensor],
    batch: int = 32,
) -> StudentScores:
    """Image scores and the mean of all maps, with the plain student (no DCAM), as it scores."""
    network.student.eval()
    size = images.shape[1]
    scores, map_sum = [], 0.0
    for start in range(0, len(images), batch):
        x = network.normalise(_batch(images[start : start + batch], network.mean.device))
        t = [f[start : start + batch] for f in teacher]
        judged = score_pyramids(t, network.student_features(x), (size, size), network.scoring)
        scores.append(judged.scores.cpu())
        map_sum += float(judged.maps.mean(dim=(1, 2)).sum())
    return StudentScores(torch.cat(scores).numpy(), map_sum / max(1, len(images)))


def _batch(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) on `device`."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(device, non_blocking=True)


def learning_rate_schedule(
    optimiser: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: constant, or cosine from `lr` down to 1 % of it at the last step."""
    if config.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=max(1, config.epochs * steps_per_epoch), eta_min=0.01 * config.lr
    )


def prepare_splits(products: list[Product], config: TrainConfig) -> list[Split]:
    return [
        Split(p.name, *split_normals(p.normals, config.val_fraction, config.seed)) for p in products
    ]


def train(
    data_dir: Path,
    config: TrainConfig,
    progress: bool = True,
    products: list[Product] | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult[StudentTeacher, StudentTeacherState]:
    """Train one student on train/good of every product under `data_dir`.

    `on_epoch(record, network, dcam)` runs after every epoch's validation, with the
    student in eval mode; hyperparameter sweeps use it to score labelled images.
    """
    started = time.perf_counter()
    seed_everything(config.seed)
    products = products if products is not None else discover(data_dir)
    splits = prepare_splits(products, config)
    size = config.image_size

    train_paths = [p for s in splits for p in s.train]
    train_images = read_images(train_paths, size)
    val_images = {s.product: read_images(s.val, size) for s in splits}

    network = StudentTeacher.pretrained(
        config.backbone, Path(config.teacher_weights) if config.teacher_weights else None
    )
    device = resolve_device(config.device)
    if config.bf16 and device.type == "cpu" and not cpu_has_bf16_units():
        log.warning(
            "bf16 on a CPU without bf16 units is emulated and far slower than fp32 "
            "(Lite2 pair, batch 16, 2-core AVX2: 16.5 s per step against 1.3 s); "
            "train with --no-bf16 here"
        )
    network.to(device, memory_format=torch.channels_last)
    network.scoring = config.scoring
    channels = [
        f.shape[1]
        for f in network.teacher_features(
            network.normalise(torch.zeros(1, 3, size, size, device=device))
        )
    ]
    dcam = DCAM(config.dcam, channels).to(device, memory_format=torch.channels_last)

    log.info("caching teacher features", images=len(train_images))
    train_teacher = teacher_pyramid(network, train_images)
    val_teacher = {name: teacher_pyramid(network, imgs) for name, imgs in val_images.items()}
    defective = {
        name: make_anomalies(imgs, config.seed)[0] for name, imgs in val_images.items() if len(imgs)
    }
    defective_teacher = {name: teacher_pyramid(network, imgs) for name, imgs in defective.items()}

    params = list(network.student.parameters()) + list(dcam.parameters())
    optimiser = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    n = len(train_images)
    steps = max(1, (n + config.batch_size - 1) // config.batch_size)
    schedule = learning_rate_schedule(optimiser, config, steps)
    shuffler = np.random.default_rng(config.seed)
    drawer = np.random.default_rng(config.seed + 1)  # defects for the denoising student
    best_state, best_epoch, best_val, best_rank = None, -1, float("inf"), float("inf")
    best_scores: dict[str, np.ndarray] = {}
    history: list[dict] = []

    for epoch in range(1, config.epochs + 1):
        network.student.train()
        dcam.train()
        order = torch.from_numpy(shuffler.permutation(n))
        running: dict[str, float] = {}
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
            unit="step",
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = train_images[idx.numpy()]
            if config.denoise_fraction > 0:
                batch = draw_on_some(batch, config.denoise_fraction, drawer)
            x = network.normalise(_batch(batch, device))
            teacher = [f[idx.to(device)] for f in train_teacher]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                student = dcam(network.student_features(x))
            loss, terms = distillation_loss(teacher, student, config.losses)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + v
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        train_terms = {k: v / steps for k, v in running.items()}

        val_scores, val_maps = {}, []
        for name, imgs in val_images.items():
            val_scores[name], mean_map = student_scores(network, imgs, val_teacher[name])
            val_maps.append(mean_map * len(imgs))
        val_map = sum(val_maps) / max(1, sum(len(v) for v in val_images.values()))
        synthetic = {
            name: auroc(
                np.r_[np.zeros(len(val_scores[name])), np.ones(len(imgs))],
                np.r_[
                    val_scores[name], student_scores(network, imgs, defective_teacher[name]).scores
                ],
            )
            for name, imgs in defective.items()
        }
        synthetic_mean = float(np.mean(list(synthetic.values()))) if synthetic else 0.0
        record = {
            "epoch": epoch,
            "loss": sum(train_terms.values()),
            **train_terms,
            "val_mean_map": val_map,
            "synthetic_auroc": synthetic_mean,
            **{f"synthetic_auroc/{name}": v for name, v in synthetic.items()},
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        # lower is better for both ranks: the mean map, or 1 - synthetic AUROC
        rank = val_map if config.checkpoint == "val_map" else 1.0 - synthetic_mean
        improved = rank < best_rank
        if improved:
            best_rank, best_val, best_epoch = rank, val_map, epoch
            best_state = copy.deepcopy(network.student.state_dict())
            best_dcam = copy.deepcopy(dcam.state_dict())
            best_scores = val_scores
        message = (
            f"epoch {epoch}/{config.epochs} loss {record['loss']:.4f} "
            f"val map {val_map:.5f} synthetic AUROC {synthetic_mean:.3f}"
            f"{' *' if improved else ''} "
            f"({record['seconds']:.0f}s)"
        )
        if progress:
            tqdm.write(message)
        log.info("epoch", **record, best=improved)
        if on_epoch is not None:
            on_epoch(record, network, dcam)

    if best_state is not None:
        network.student.load_state_dict(best_state)
        dcam.load_state_dict(best_dcam)
    else:  # zero epochs: the untrained student still needs calibration scores
        best_scores = {
            name: student_scores(network, imgs, val_teacher[name]).scores
            for name, imgs in val_images.items()
        }
    if config.memory_patches > 0:  # calibrated on the fused map from here on
        offsets = np.cumsum([0] + [len(s.train) for s in splits])
        best_scores = fit_memory_head(
            network,
            {
                s.product: train_images[a:b]
                for s, a, b in zip(splits, offsets[:-1], offsets[1:], strict=True)
            },
            val_images,
            config.memory_patches,
            config.memory_stride,
            config.seed,
            progress=progress,
        )
    network.to("cpu").eval()  # artifacts are written, and calibrated scores kept, on the CPU
    if dcam is not None:
        dcam.to("cpu")
    data = {
        "root": str(data_dir),
        "products": {s.product: {"train": len(s.train), "val": len(s.val)} for s in splits},
        "fingerprint": fingerprint(train_paths + [p for s in splits for p in s.val]),
    }
    return TrainResult(
        network=network,
        config=config,
        best_epoch=best_epoch,
        val_scores=best_scores,
        history=history,
        seconds=time.perf_counter() - started,
        data=data,
        state=StudentTeacherState(
            dcam=dcam.eval() if config.dcam != "none" else None, best_val_map=best_val
        ),
        manifest_fields=network.manifest_fields(),
        training_record={"best_val_mean_map": best_val},
    )
