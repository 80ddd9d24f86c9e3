"""Writing model artifacts: safetensors weights + a JSON manifest listing them with their sha256.

Safetensors holds only tensors, so loading an artifact can never execute code
(no pickle), and the sha256 in the manifest pins the exact weights. Reading,
verifying and loading an artifact is `model.release`'s business.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from model.release import sha256_file
from schemas.manifest import LEGACY_WEIGHTS_FILE, ModelManifest, ReleaseFile
from schemas.object_layout import MANIFEST_FILE

#: The name of the weights file an artifact is written with.
WEIGHTS_FILE = LEGACY_WEIGHTS_FILE


def save_weights(
    network: nn.Module, manifest: ModelManifest, out_dir: Path, weights_file: str = WEIGHTS_FILE
) -> ModelManifest:
    """Write the network's weights into `out_dir`; the manifest that lists them, not written.

    Its `files` are the weights file with its real sha256, whatever
    `manifest.files` said before. The caller writes the manifest once it is
    complete (`write_manifest`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / weights_file
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(weights), metadata={"version": manifest.version})
    return manifest.model_copy(
        update={"files": [ReleaseFile(name=weights_file, sha256=sha256_file(weights))]}
    )


def save_artifact(
    network: nn.Module, manifest: ModelManifest, out_dir: Path, weights_file: str = WEIGHTS_FILE
) -> ModelManifest:
    """Write the network's weights and the manifest into `out_dir`; returns it as written."""
    manifest = save_weights(network, manifest, out_dir, weights_file)
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: ModelManifest) -> None:
    """(Re)write the manifest of the artifact in `out_dir`."""
    (Path(out_dir) / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
