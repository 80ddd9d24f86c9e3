"""Inference throughput of the served model: images/s by runtime, precision and batch size.

Measures exactly what a worker runs per batch (teacher + student + anomaly map +
score, uint8 frames in, scores and maps on the host out) through each runtime
(`model.runtimes`), on real-sized random frames at the model's input size.
Every configuration is measured in the same process, in alternating rounds, so
a machine that gets busier or quieter during the run affects all of them alike;
the table shows the best round of each. Compiled runtimes run the release's
ONNX export (made here, into a scratch folder, when the artifact has none), and
their parity with torch fp32 on the smoke frames is shown beside their speed: a
fast configuration that would be refused at load is marked so.
Figures depend on the machine: the table says the device and thread counts.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.artifact import save_artifact
from model.loading import load_network
from model.network import StudentTeacher
from model.parity import check_parity, smoke_frames
from model.runtime import InspectionModel, resolve_device
from model.runtimes import ONNX_FILE, PRECISIONS, RUNTIMES, open_export
from model.runtimes.torch_engine import TorchEngine
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold, ReleaseFile
from trainer.learning.export import add_onnx_export

#: Bench-only torch variants for GPUs: torch.compile ("max-autotune-no-cudagraphs") and
#: torch.compile with CUDA graphs ("reduce-overhead").
COMPILED = {"torch-compile": "max-autotune-no-cudagraphs", "torch-cudagraphs": "reduce-overhead"}
#: What `--runtime NAME` without a precision measures (the served runtimes: their
#: `bench_precisions`).
DEFAULT_PRECISIONS: dict[str, tuple[str, ...]] = {
    **{name: spec.bench_precisions for name, spec in RUNTIMES.items()},
    **{name: ("fp16", "bf16") for name in COMPILED},
}


@dataclass
class Config:
    """One runtime at one precision, as `--runtime name[:precision]` names it."""

    runtime: str
    precision: str
    model: InspectionModel | None = None
    parity: str = ""
    error: str = ""
    rates: dict[int, list[float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.runtime}:{self.precision}"


def parse_configs(specs: list[str] | None) -> list[Config]:
    """`["torch", "openvino:bf16"]` -> configs; a bare name means its default precisions."""
    configs = []
    for spec in specs or ["torch"]:
        name, _, precision = spec.partition(":")
        known = {
            **{name: spec.precisions for name, spec in RUNTIMES.items()},
            **{name: PRECISIONS for name in COMPILED},
        }
        if name not in known:
            raise ValueError(f"unknown runtime {name!r}: one of {[*RUNTIMES, *COMPILED]}")
        for p in [precision] if precision else DEFAULT_PRECISIONS[name]:
            if p not in known[name]:
                raise ValueError(f"{name} runs at {list(known[name])}, not {p!r}")
            configs.append(Config(name, p))
    return configs


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
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same untrained pair for every runtime (and its export)
        network = StudentTeacher("efficientnet_lite0")
    return InspectionModel(network, manifest, "cpu", precision)


def images_per_second(model: InspectionModel, batch: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    size = model.image_size
    frames = list(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    model.judge(frames)  # warm-up: allocator, kernels, a compiled graph for this shape
    model.judge(frames)
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done < 3 * batch:
        model.judge(frames)
        done += batch
    return done / elapsed


def _export_folder(model_path: Path | None, scratch: Path) -> Path:
    """An artifact folder with an ONNX export: the model's own, or one made in `scratch`."""
    if (scratch / ONNX_FILE).is_file():
        return scratch
    if model_path is not None:
        network, manifest = load_network(model_path)
        if ONNX_FILE in {f.name for f in manifest.files}:
            return Path(model_path)
    else:
        bench = fresh_model()
        network, manifest = bench.network.cpu(), bench.manifest
    manifest = save_artifact(network, manifest, scratch)
    add_onnx_export(network, manifest, scratch)
    return scratch


def _build(config: Config, model_path: Path | None, scratch: Path, device: str) -> InspectionModel:
    """The served model of one configuration (parity with torch fp32 recorded, not enforced)."""
    if model_path is not None:
        network, manifest = load_network(model_path)
    else:
        bench = fresh_model()
        network, manifest = bench.network, bench.manifest
    if config.runtime == "torch":
        return InspectionModel(network, manifest, device, config.precision)
    if config.runtime in COMPILED:
        engine = TorchEngine(
            network,
            resolve_device(device),
            config.precision,
            manifest.image_size,
            compile_mode=COMPILED[config.runtime],
        )
        return InspectionModel(network, manifest, device, config.precision, engine=engine)
    folder = _export_folder(model_path, scratch)
    engine = open_export(config.runtime, folder / ONNX_FILE, config.precision, device)
    model = InspectionModel(network, manifest, "cpu", config.precision, engine=engine)
    reference = InspectionModel(network, manifest, "cpu", "fp32")
    report = check_parity(reference, model, smoke_frames(manifest.image_size))
    config.parity = "ok" if report.ok else "FAILS (refused at load)"
    config.parity += f", score error {100 * report.max_score_error:.2f} % of threshold"
    return model


def run_benchmark(
    model_path: Path | None,
    batches: list[int],
    seconds: float,
    runtimes: list[str] | None = None,
    rounds: int = 2,
    device: str = "cpu",
    json_path: Path | None = None,
) -> list[dict]:
    """Measure every configuration at every batch size, `rounds` alternating rounds; print a
    table (best round of each) and return its rows (also written to `json_path`)."""
    configs = parse_configs(runtimes)
    where = resolve_device(device)
    head = (
        f"device {where}, {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, model "
        f"{model_path or 'untrained efficientnet_lite0 pair, 256 px'}"
    )
    print(head, flush=True)
    with tempfile.TemporaryDirectory(prefix="kenpin-bench-") as scratch:
        for config in configs:
            try:
                config.model = _build(config, model_path, Path(scratch), str(where))
            except Exception as exc:  # a runtime not installed or not usable here: say so
                config.error = f"{type(exc).__name__}: {exc}"[:200]
                print(f"{config.label}: not measured: {config.error}", flush=True)
        for _ in range(rounds):
            for batch in batches:
                for config in configs:
                    if config.model is None:
                        continue
                    rate = images_per_second(config.model, batch, seconds)
                    config.rates.setdefault(batch, []).append(rate)
    rows = [
        {
            "runtime": c.runtime,
            "precision": c.precision,
            "device": str(where),
            "images_per_s": {b: max(r) for b, r in c.rates.items()},
            "rounds": c.rates,
            "parity": c.parity or _unchecked(c),
            "error": c.error,
        }
        for c in configs
    ]
    print(format_table(rows, batches))
    if json_path is not None:
        Path(json_path).write_text(json.dumps({"header": head, "rows": rows}, indent=2))
    return rows


def format_table(rows: list[dict], batches: list[int]) -> str:
    """Markdown: one line per runtime and precision, images/s per batch size side by side."""
    lines = [
        "| runtime | precision | " + " | ".join(f"batch {b}" for b in batches) + " | parity |",
        "|---|---|" + "---|" * len(batches) + "---|",
    ]
    for row in rows:
        cells = [
            f"{row['images_per_s'][b]:.1f}" if b in row["images_per_s"] else "-" for b in batches
        ]
        note = row["parity"] or row["error"]
        lines.append(f"| {row['runtime']} | {row['precision']} | {' | '.join(cells)} | {note} |")
    return "\n".join(lines)


def _unchecked(config: Config) -> str:
    if config.runtime == "torch" and config.precision == "fp32":
        return "the reference"
    return "" if config.error else "not checked (the network itself, not an export)"
