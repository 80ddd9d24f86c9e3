"""Where the served model comes from: a local artifact folder, or a release in S3."""

from __future__ import annotations

from pathlib import Path

from worker.logs import get_logger
from worker.model.artifact import MANIFEST_FILE, read_manifest
from worker.model.runtime import InspectionModel
from worker.settings import WorkerSettings
from worker.storage import ObjectStore

log = get_logger(__name__)


def fetch_artifact(store: ObjectStore, key_prefix: str, into: Path) -> Path:
    """Download `<prefix>/manifest.json` and the weights it names into `into`.

    Nothing is trusted here: `InspectionModel.load` checks the weights' sha256
    against the manifest and loads them as safetensors (no pickle).
    """
    into.mkdir(parents=True, exist_ok=True)
    prefix = key_prefix.rstrip("/")
    (into / MANIFEST_FILE).write_bytes(store.get(f"{prefix}/{MANIFEST_FILE}"))
    manifest = read_manifest(into)
    weights_name = Path(manifest.weights_file).name  # never a path out of `into`
    (into / weights_name).write_bytes(store.get(f"{prefix}/{weights_name}"))
    return into


def load_served_model(
    settings: WorkerSettings, store: ObjectStore | None = None
) -> InspectionModel:
    """The model named by the settings, verified, on the configured device and precision."""
    path = settings.model_path
    if settings.model_s3_key:
        store = store or ObjectStore.from_settings(settings)
        log.info("fetching model", key=settings.model_s3_key, into=str(path))
        fetch_artifact(store, settings.model_s3_key, path)
    model = InspectionModel.load(path, device=settings.device, precision=settings.precision)
    model.warm_up(settings.max_batch)
    return model
