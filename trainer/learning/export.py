"""Turn a training result into a servable artifact: weights + manifest, no pickle."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schemas.manifest import ModelManifest, ReleaseFile
from trainer.learning.calibrate import DEFAULT_QUANTILE, calibrate
from trainer.learning.train import TrainResult
from worker.model.artifact import WEIGHTS_FILE, save_artifact


def new_version(now: datetime | None = None) -> str:
    """Sortable, human-readable release version: UTC time of export."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def export(
    result: TrainResult,
    out_dir: Path,
    version: str | None = None,
    quantile: float = DEFAULT_QUANTILE,
    parent_version: str | None = None,
) -> ModelManifest:
    manifest = ModelManifest(
        version=version or new_version(),
        created=datetime.now(UTC),
        architecture=result.config.architecture,
        image_size=result.config.image_size,
        **result.manifest_fields,  # what the architecture records about itself
        # replaced by the real digest when the weights are written
        files=[ReleaseFile(name=WEIGHTS_FILE, sha256="0" * 64)],
        products=calibrate(result.val_scores, quantile),
        scoring=result.config.scoring,
        training={
            **result.config.as_dict(),
            "best_epoch": result.best_epoch,
            "best_val_mean_map": result.best_val_map,
            "seconds": round(result.seconds, 1),
            "history": result.history,
        },
        metrics={},
        data=result.data,
        parent_version=parent_version,
    )
    return save_artifact(result.network, manifest, Path(out_dir))
