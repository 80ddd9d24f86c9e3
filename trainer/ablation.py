"""The paper's ablation in one run: same data, seed, epochs and teacher for every variant.

(a) STFPM-style baseline: no DCAM, channel CD only.
(b) the paper's best: channel DCAM + channel CD + spatial KD.
(c) both-attention (CBAM) DCAM + channel CD + spatial KD.

Each variant is trained, exported and evaluated on the test split; a variant whose
artifact already exists in the output folder is not trained again, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import structlog

from trainer.losses import LossWeights
from trainer.train import TrainConfig

log = structlog.get_logger(__name__)

VARIANTS: dict[str, TrainConfig] = {
    "a_stfpm": TrainConfig(dcam="none", losses=LossWeights(spatial_kd=0.0)),
    "b_channel_dcam_cd_kd": TrainConfig(dcam="channel", losses=LossWeights()),
    "c_cbam_dcam_cd_kd": TrainConfig(dcam="both", losses=LossWeights()),
}


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
