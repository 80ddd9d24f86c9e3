"""Turn a training result into a servable artifact: weights, ONNX export, manifest; no pickle.

The ONNX export (`network.onnx`) is made here, once, when the release is made, and
ships inside it with its sha256 like the weights: a worker configured for
onnxruntime or openvino never compiles or downloads anything else. An export
that cannot be made or that does not judge the smoke frames as the network does
is left out, with a warning: the release still serves with torch, and the
release gate (`trainer.service.retrain`) checks the export on real images again.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog
from torch import nn

from model.artifact import WEIGHTS_FILE, save_weights, write_manifest
from model.loading import load_network
from model.parity import check_parity, smoke_frames
from model.release import sha256_file
from model.runtime import InspectionModel
from model.runtimes import ONNX_FILE, open_export
from model.runtimes.onnx_export import export_onnx
from schemas.manifest import ModelManifest, ReleaseFile
from trainer.learning.calibrate import DEFAULT_QUANTILE, calibrate
from trainer.learning.data import discover, fingerprint, read_images, split_normals
from trainer.learning.memory_fit import fit_memory_head, served_scores
from trainer.learning.train import TrainResult

log = structlog.get_logger(__name__)


def new_version(now: datetime | None = None) -> str:
    """Sortable, human-readable release version: UTC time of export."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def export(
    result: TrainResult,
    out_dir: Path,
    version: str | None = None,
    quantile: float = DEFAULT_QUANTILE,
    parent_version: str | None = None,
    onnx: bool = False,
    write: bool = True,
    per_product: Mapping[str, float] | None = None,
) -> ModelManifest:
    """Write the artifact of `result` into `out_dir`; with `onnx`, its ONNX export too.

    Releases are made with `onnx` (`trainer.service.retrain`, `kenpin-trainer train`);
    studies (sweep, ablation) need only the weights. The manifest is written once,
    complete; without `write` it is only returned: the retrain service adds the
    gate's measurement and the snapshot to it first, and writes it for the release.
    """
    manifest = ModelManifest(
        version=version or new_version(),
        created=datetime.now(UTC),
        architecture=result.config.architecture,
        image_size=result.config.image_size,
        **result.manifest_fields,  # what the architecture records about itself
        # replaced by the real digest when the weights are written
        files=[ReleaseFile(name=WEIGHTS_FILE, sha256="0" * 64)],
        products=calibrate(result.val_scores, quantile, per_product),
        scoring=result.config.scoring,
        training={
            **result.config.as_dict(),
            "best_epoch": result.best_epoch,
            **result.training_record,
            "seconds": round(result.seconds, 1),
            "history": result.history,
        },
        metrics={},
        data=result.data,
        parent_version=parent_version,
    )
    manifest = save_weights(result.network, manifest, Path(out_dir))
    if onnx:
        manifest = onnx_export_file(result.network, manifest, Path(out_dir))
    if write:
        write_manifest(Path(out_dir), manifest)
    return manifest


def add_onnx_export(network: nn.Module, manifest: ModelManifest, out_dir: Path) -> ModelManifest:
    """Give the artifact in `out_dir` its ONNX export, if faithful; returns the manifest written."""
    manifest = onnx_export_file(network, manifest, Path(out_dir))
    write_manifest(Path(out_dir), manifest)
    return manifest


def onnx_export_file(network: nn.Module, manifest: ModelManifest, out_dir: Path) -> ModelManifest:
    """Write `network.onnx` beside the weights and list it in the manifest, if it is faithful.

    Checked with ONNX Runtime on the worker's smoke frames before it is listed;
    returns the manifest listing it (unchanged when the export is left out), not
    written: that is the caller's, once the manifest is complete.
    """
    path = Path(out_dir) / ONNX_FILE
    served = copy.deepcopy(network).cpu().float().eval()
    try:
        export_onnx(served, manifest.image_size, path)
        reference = InspectionModel(served, manifest, device="cpu")
        compiled = InspectionModel(
            served, manifest, device="cpu", engine=open_export("onnxruntime", path, device="cpu")
        )
        report = check_parity(reference, compiled, smoke_frames(manifest.image_size))
    except Exception as exc:  # an architecture the exporter cannot trace
        path.unlink(missing_ok=True)
        log.warning("onnx export failed; release serves with torch only", error=repr(exc))
        return manifest
    if not report.ok:
        path.unlink(missing_ok=True)
        log.warning("onnx export left out: not faithful", parity=report.summary())
        return manifest
    files = [f for f in manifest.files if f.name != ONNX_FILE]
    files.append(ReleaseFile(name=ONNX_FILE, sha256=sha256_file(path)))
    return manifest.model_copy(update={"files": files})


def release_splits(
    manifest: ModelManifest, model_dir: Path, data_dir: Path
) -> list[tuple[str, list[Path], list[Path]]]:
    """(product, training normals, held-out normals), split as the release's training split
    them (its `val_fraction` and `seed`); a release trained on other normals is refused."""
    val_fraction = float(manifest.training.get("val_fraction", 0.2))
    seed = int(manifest.training.get("seed", 0))
    splits = [(p.name, *split_normals(p.normals, val_fraction, seed)) for p in discover(data_dir)]
    used = fingerprint([path for _, train, val in splits for path in (*train, *val)])
    if manifest.data.get("fingerprint") not in (None, used):
        raise ValueError(
            f"{model_dir} was trained on other normals than {data_dir}'s "
            f"(fingerprint {manifest.data['fingerprint'][:12]}, here {used[:12]})"
        )
    return splits


def recalibrate(
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    quantile: float = DEFAULT_QUANTILE,
    per_product: Mapping[str, float] | None = None,
) -> ModelManifest:
    """A new release of the same network with its thresholds calibrated again, by today's rule.

    The held-out normals are the release's own (`release_splits`), scored as the
    network serves them; the files are copied unchanged, the manifest is new (its
    parent: the release it came from).
    """
    network, manifest = load_network(model_dir)
    size = manifest.image_size
    val_scores = {
        name: served_scores(network, read_images(val, size))
        for name, _, val in release_splits(manifest, model_dir, data_dir)
        if name in manifest.products
    }
    release = manifest.model_copy(
        update={
            "version": new_version(),
            "created": datetime.now(UTC),
            "products": calibrate(val_scores, quantile, per_product),
            "metrics": {},
            "parent_version": manifest.version,
        }
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in manifest.files:
        shutil.copyfile(Path(model_dir) / file.name, out_dir / file.name)
    write_manifest(out_dir, release)
    return release


def export_with_memory(
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    patches: int,
    stride: int = 16,
    quantile: float = DEFAULT_QUANTILE,
    progress: bool = True,
    per_product: Mapping[str, float] | None = None,
) -> ModelManifest:
    """A new release of a trained release's student with a memory head fitted on `data_dir`.

    The normals are split as the release's training split them (its `val_fraction` and
    `seed`), so the memory is drawn from the images the student trained on and the
    thresholds are calibrated again, on the fused map, on the ones it did not. A
    release trained on other data is refused: its held-out normals are unknown here.
    """
    network, manifest = load_network(model_dir)  # a head it has is replaced
    splits = release_splits(manifest, model_dir, data_dir)
    seed = int(manifest.training.get("seed", 0))
    size = manifest.image_size
    val_scores = fit_memory_head(
        network,
        {name: read_images(train, size) for name, train, _ in splits},
        {name: read_images(val, size) for name, _, val in splits},
        patches,
        stride,
        seed,
        progress=progress,
    )
    network.cpu().eval()
    release = manifest.model_copy(
        update={
            "version": new_version(),
            "created": datetime.now(UTC),
            "memory_head": network.memory_head,
            "products": calibrate(val_scores, quantile, per_product),
            "training": {**manifest.training, "memory_patches": patches, "memory_stride": stride},
            "metrics": {},
            "parent_version": manifest.version,
        }
    )
    release = onnx_export_file(network, save_weights(network, release, Path(out_dir)), out_dir)
    write_manifest(Path(out_dir), release)
    return release
