"""Releases in, models out: a verified release's tensors in its network, served, or refused.

The one path from a release (in the bucket, or an artifact folder on disk) to a
served model, for every process that loads one: a starting worker
(`worker.startup`), the hot swap (`worker.hot_swap`), the trainer measuring
the current release beside a candidate (`trainer.service.retrain`), evaluation and
benchmarks.

1. `fetch_release`: `<prefix>/manifest.json` and every file it lists, into a
   folder; optionally checked against the manifest that was announced;
2. `load_network`: every file's sha256 against the manifest, the tensors read
   as safetensors, the network of the manifest's `architecture` built
   (`model.registry`) and the tensors loaded into it, strictly;
3. `load_model` / `fetch_model`: the same, as an `InspectionModel` on a device,
   run by the configured runtime (`model.runtimes`): torch, or the
   release's ONNX export through ONNX Runtime or OpenVINO once it has judged a
   fixed set of frames as torch fp32 does (`model.parity`).

Safetensors files hold only tensors, so loading a release can never execute
code: pickle (`torch.load`) is never called, not even with `weights_only=True`.
A file that is not safetensors is refused, whatever its name says, except the
ONNX export (`network.onnx`), a protobuf graph that only a runtime reads.

A release without an export is served by torch whatever the runtime setting (a
warning says so): older releases and trainers without export keep working. A
release whose export does not load, or judges differently from torch fp32, is
refused (`PARITY_FAILED`): serving it with torch instead would hide a broken
release behind a slower worker.

Anything wrong raises `ReleaseRefused`, whose `reason` (a `RefusalReason`) is
the label of `kenpin_releases_refused_total{reason}`, the reason in /readyz and
in the logs; callers decide on the reason, never on the error's text.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from safetensors.torch import load_file
from torch import nn

from model import registry
from model.parity import check_parity, smoke_frames
from model.release import (
    ObjectReader,
    RefusalReason,
    ReleaseRefused,
    fetch_release,
    read_manifest,
    verify_files,
)
from model.runtime import InspectionModel, resolve_device
from model.runtimes import EXPORT_FILES, ONNX_FILE, choose_runtime, open_export
from schemas.manifest import ModelManifest

log = structlog.get_logger(__name__)


def load_network(
    path: Path, manifest: ModelManifest | None = None
) -> tuple[nn.Module, ModelManifest]:
    """Verify and load an artifact folder (or its manifest path) onto the CPU, in eval mode.

    With `manifest`, the files are checked against it rather than against the
    folder's manifest file: the trainer gates a candidate whose manifest is not
    written yet.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest = manifest or read_manifest(path)
    state: dict = {}
    for file in verify_files(folder, manifest):
        if file.name in EXPORT_FILES:
            continue  # verified above; read by a runtime (`load_model`), never as tensors
        try:
            tensors = load_file(str(file), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for foreign formats
            raise ReleaseRefused(
                RefusalReason.NOT_SAFETENSORS, f"{file}: not a safetensors file: {exc}"
            ) from exc
        clash = sorted(state.keys() & tensors.keys())
        if clash:
            raise ReleaseRefused(
                RefusalReason.INVALID_ARTIFACT, f"{file}: tensors {clash[:3]} in two files"
            )
        state.update(tensors)
    try:
        network = registry.build(manifest)
    except registry.UnknownArchitecture as exc:
        raise ReleaseRefused(RefusalReason.UNKNOWN_ARCHITECTURE, str(exc)) from exc
    except ValueError as exc:
        raise ReleaseRefused(RefusalReason.INVALID_MANIFEST, f"{path}: {exc}") from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ReleaseRefused(
            RefusalReason.INVALID_ARTIFACT,
            f"{folder}: weights do not fit {_described(manifest)}: {exc}",
        ) from exc
    return network.eval(), manifest


def load_model(
    path: Path,
    device: str = "auto",
    precision: str = "fp32",
    runtime: str = "torch",
    manifest: ModelManifest | None = None,
) -> InspectionModel:
    """A verified artifact folder as a model ready to serve on `device` (not warmed up).

    With `runtime` onnxruntime or openvino, the release's export runs it, once it
    passed the parity check; a release without an export is served by torch.
    "auto" is the fastest runtime on `device` (`model.runtimes.choose_runtime`).
    `manifest`: as `load_network`'s.
    """
    runtime = choose_runtime(runtime, resolve_device(device).type, precision)
    network, manifest = load_network(path, manifest)
    if runtime == "torch":
        return InspectionModel(network, manifest, device=device, precision=precision)
    if ONNX_FILE not in {file.name for file in manifest.files}:
        log.warning(
            "release has no export, serving it with torch",
            version=manifest.version,
            runtime=runtime,
            file=ONNX_FILE,
        )
        return InspectionModel(network, manifest, device=device, precision=precision)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        engine = open_export(runtime, folder / ONNX_FILE, precision, device)
    except Exception as exc:  # the runtime's own parse/compile errors
        raise ReleaseRefused(
            RefusalReason.INVALID_ARTIFACT, f"{folder / ONNX_FILE}: {runtime} cannot load it: {exc}"
        ) from exc
    reference = InspectionModel(network, manifest, device="cpu", precision="fp32")
    model = InspectionModel(network, manifest, device=device, precision=precision, engine=engine)
    try:
        report = check_parity(reference, model, smoke_frames(manifest.image_size))
    except Exception as exc:  # wrong output names, shapes, a graph for another size
        raise ReleaseRefused(
            RefusalReason.PARITY_FAILED, f"{runtime} could not judge the smoke frames: {exc}"
        ) from exc
    if not report.ok:
        raise ReleaseRefused(RefusalReason.PARITY_FAILED, report.summary())
    log.info("export passed parity", version=manifest.version, parity=report.summary())
    return model


def fetch_model(
    store: ObjectReader,
    prefix: str,
    into: Path,
    *,
    expected: ModelManifest | None = None,
    device: str = "auto",
    precision: str = "fp32",
    runtime: str = "torch",
) -> InspectionModel:
    """`fetch_release` then `load_model`: a release from the bucket, verified, on `device`."""
    fetch_release(store, prefix, into, expected)
    return load_model(into, device=device, precision=precision, runtime=runtime)


def _described(manifest: ModelManifest) -> str:
    if manifest.backbone:
        return f"{manifest.architecture} on {manifest.backbone}"
    return manifest.architecture
