"""The paper's ablation in one run: same data, seed, epochs and teacher for every variant.

(a) STFPM-style baseline: no DCAM, channel CD only.
(b) the paper's best: channel DCAM + channel CD + spatial KD.
(c) both-attention (CBAM) DCAM + channel CD + spatial KD.
(d) (b) trained again (training is deterministic) with its channel DCAM KEPT at
    inference: thresholds calibrated and the test split scored through the
    attended student.

Each variant is trained, exported and evaluated on the test split; a variant whose
artifact already exists in the output folder is not trained again, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

from trainer.losses import LossWeights
from trainer.train import TrainConfig

log = structlog.get_logger(__name__)

VARIANTS: dict[str, TrainConfig] = {
    "a_stfpm": TrainConfig(dcam="none", losses=LossWeights(spatial_kd=0.0)),
    "b_channel_dcam_cd_kd": TrainConfig(dcam="channel", losses=LossWeights()),
    "c_cbam_dcam_cd_kd": TrainConfig(dcam="both", losses=LossWeights()),
    "d_channel_dcam_kept_at_inference": TrainConfig(dcam="channel", losses=LossWeights()),
}
KEEP_DCAM = {"d_channel_dcam_kept_at_inference"}


def run_ablation(
    data_dir: Path,
    out_dir: Path,
    epochs: int,
    batch_size: int,
    seed: int,
    bf16: bool,
    variants: list[str] | None = None,
) -> dict[str, dict]:
    from trainer.export import export
    from trainer.train import train
    from worker.model.artifact import MANIFEST_FILE, read_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in variants or list(VARIANTS):
        config = replace(VARIANTS[name], epochs=epochs, batch_size=batch_size, seed=seed, bf16=bf16)
        artifact = out_dir / name / "model"
        if name in KEEP_DCAM:
            results[name] = dcam_kept_at_inference(data_dir, config, out_dir / name)
            continue
        if not (artifact / MANIFEST_FILE).is_file():
            log.info("training variant", variant=name, config=config.as_dict())
            result = train(data_dir, config)
            export(result, artifact, version=f"ablation-{name}")
        from trainer.evaluate import evaluate_artifact  # written while the first variant trains

        report = evaluate_artifact(artifact, data_dir, out_dir / name / "eval")
        training = read_manifest(artifact).training
        report["training"] = {k: training[k] for k in ("epochs", "best_epoch", "seconds")}
        results[name] = report
    (out_dir / "ablation.json").write_text(json.dumps(results, indent=2))
    return results


def dcam_kept_at_inference(data_dir: Path, config: TrainConfig, out: Path) -> dict:
    """Train with DCAM, then calibrate and evaluate through the ATTENDED student."""
    from datetime import UTC, datetime

    from safetensors.torch import save_file

    from schemas.manifest import ModelManifest, Normalisation
    from trainer.calibrate import calibrate
    from trainer.data import discover, read_images
    from trainer.dcam import AttendedStudentTeacher
    from trainer.evaluate import evaluate_model
    from trainer.train import prepare_splits, train
    from worker.model.backbones import backbone_spec
    from worker.model.runtime import InspectionModel

    result = train(data_dir, config)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in result.dcam.state_dict().items()},
        str(out / "dcam.safetensors"),
    )
    save_file(
        {k: v.contiguous() for k, v in result.network.state_dict().items()},
        str(out / "pair.safetensors"),
    )
    spec = backbone_spec(config.backbone)
    network = AttendedStudentTeacher(result.network, result.dcam).eval()
    manifest = ModelManifest(
        version="ablation-dcam-kept",
        created=datetime.now(UTC),
        backbone=config.backbone,
        image_size=config.image_size,
        normalisation=Normalisation(mean=spec.mean, std=spec.std),
        sha256="0" * 64,
        products={},
        training={**config.as_dict(), "seconds": result.seconds, "best_epoch": result.best_epoch},
    )
    model = InspectionModel(network, manifest, device="cpu")
    scores = {}
    for split in prepare_splits(discover(data_dir), config):
        images = read_images(split.val, config.image_size)
        scores[split.product] = np.concatenate(
            [model.judge(list(images[i : i + 16])).scores for i in range(0, len(images), 16)]
        )
    model.manifest = manifest.model_copy(update={"products": calibrate(scores)})
    report = evaluate_model(model, data_dir, out / "eval")
    report["training"] = {
        "epochs": config.epochs,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
    }
    return report
