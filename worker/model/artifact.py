"""Model artifacts on disk: safetensors weights + a JSON manifest, verified before use.

Safetensors holds only tensors, so loading an artifact can never execute code
(no pickle), and the sha256 in the manifest pins the exact weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from schemas.manifest import ModelManifest
from worker.model.backbones import sha256_file
from worker.model.network import StudentTeacher

MANIFEST_FILE = "manifest.json"


class ArtifactError(RuntimeError):
    """An artifact that must not be served: missing file, wrong hash, weights that do not fit."""


def save_artifact(network: StudentTeacher, manifest: ModelManifest, out_dir: Path) -> ModelManifest:
    """Write weights and manifest into `out_dir`; returns the manifest with the real sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / manifest.weights_file
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(weights), metadata={"version": manifest.version})
    manifest = manifest.model_copy(update={"sha256": sha256_file(weights)})
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_manifest(path: Path) -> ModelManifest:
    path = Path(path)
    manifest_path = path / MANIFEST_FILE if path.is_dir() else path
    try:
        return ModelManifest.model_validate(json.loads(manifest_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{manifest_path}: not a readable model manifest: {exc}") from exc


def load_artifact(path: Path) -> tuple[StudentTeacher, ModelManifest]:
    """Verify and load an artifact directory (or its manifest path) onto the CPU."""
    manifest = read_manifest(path)
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    weights = root / manifest.weights_file
    if not weights.is_file():
        raise ArtifactError(f"{weights}: weights file missing")
    digest = sha256_file(weights)
    if digest != manifest.sha256:
        raise ArtifactError(f"{weights}: sha256 {digest} does not match manifest {manifest.sha256}")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for foreign formats
        raise ArtifactError(f"{weights}: not a safetensors file: {exc}") from exc
    network = StudentTeacher(manifest.backbone, scoring=manifest.scoring)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights}: weights do not fit {manifest.backbone}: {exc}") from exc
    return network.eval(), manifest
