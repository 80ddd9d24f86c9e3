"""Inference throughput of the served model: images/s by batch size and precision.

Measures exactly what a worker runs per batch (teacher + student + anomaly map,
one call under inference mode), on random frames at the model's input size.
Figures depend on the machine: the table says the device and thread count.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from schemas.manifest import ModelManifest, Normalisation, ProductThreshold, ReleaseFile
from worker.model.network import StudentTeacher
from worker.model.release import load_model
from worker.model.runtime import InspectionModel


def fresh_model(image_size: int = 256, precision: str = "fp32") -> InspectionModel:
    """An untrained pair: same cost as a trained one, for benchmarking without an artifact."""
    manifest = ModelManifest(
        version="bench",
        created="2026-01-01T00:00:00Z",
        backbone="efficientnet_lite0",
        image_size=image_size,
        normalisation=Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3),
        files=[ReleaseFile(name="untrained", sha256="0" * 64)],
        products={"any": ProductThreshold(threshold=1.0, rule="bench", normal_scores=0)},
    )
    return InspectionModel(StudentTeacher("efficientnet_lite0"), manifest, "cpu", precision)


def images_per_second(model: InspectionModel, batch: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    size = model.image_size
    frames = list(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    model.judge(frames)  # warm-up: allocator, kernels
    model.judge(frames)
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done < 3 * batch:
        model.judge(frames)
        done += batch
    return done / elapsed


def run_benchmark(model_path: Path | None, batches: list[int], seconds: float) -> list[dict]:
    rows = []
    print(f"device cpu, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print("| precision | batch | images/s | ms/batch |")
    print("|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        model = (
            load_model(model_path, device="cpu", precision=precision)
            if model_path
            else fresh_model(precision=precision)
        )
        for batch in batches:
            rate = images_per_second(model, batch, seconds)
            rows.append({"precision": precision, "batch": batch, "images_per_s": rate})
            print(f"| {precision} | {batch} | {rate:.1f} | {1000 * batch / rate:.1f} |", flush=True)
    return rows
