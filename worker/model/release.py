"""Releases in, models out: fetch a release's files, verify every sha256, load, or refuse.

The one path from a release (in the bucket, or an artifact folder on disk) to a
served model, for every process that loads one: a starting worker
(`worker.startup`), the hot swap (`worker.hot_swap`), the trainer measuring
the current release beside a candidate (`trainer.service.retrain`), evaluation and
benchmarks.

1. `fetch_release`: `<prefix>/manifest.json` and every file it lists, into a
   folder; optionally checked against the manifest that was announced;
2. `load_network`: every file's sha256 against the manifest, the tensors read
   as safetensors, the network of the manifest's `architecture` built
   (`worker.model.registry`) and the tensors loaded into it, strictly;
3. `load_model` / `fetch_model`: the same, as an `InspectionModel` on a device,
   run by the configured runtime (`worker.model.runtimes`): torch, or the
   release's ONNX export through ONNX Runtime or OpenVINO once it has judged a
   fixed set of frames as torch fp32 does (`worker.model.parity`).

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

import json
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog
from pydantic import ValidationError
from safetensors.torch import load_file
from torch import nn

from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE
from worker.model import registry
from worker.model.backbones import sha256_file
from worker.model.parity import check_parity, smoke_frames
from worker.model.runtime import InspectionModel
from worker.model.runtimes import EXPORT_FILES, ONNX_FILE, check_choice, open_export

log = structlog.get_logger(__name__)


class RefusalReason(StrEnum):
    """Why a release is not served: a metric label, and what the logs and /readyz say."""

    #: The bucket did not answer or lacks an object; the only reason retried later.
    DOWNLOAD_FAILED = "download_failed"
    #: The manifest is not readable, or describes no network that can be built.
    INVALID_MANIFEST = "invalid_manifest"
    #: The stored manifest is not the one announced (other version or other files).
    MANIFEST_MISMATCH = "manifest_mismatch"
    #: The manifest names an architecture this worker does not have.
    UNKNOWN_ARCHITECTURE = "unknown_architecture"
    #: A file's bytes do not have the sha256 the manifest gives.
    SHA256_MISMATCH = "sha256_mismatch"
    #: A file is not safetensors (a pickle renamed, say).
    NOT_SAFETENSORS = "not_safetensors"
    #: A file is missing, or the tensors do not fit the network.
    INVALID_ARTIFACT = "invalid_artifact"
    #: The loaded model judged a smoke batch wrongly (`worker.hot_swap.smoke_test`).
    SMOKE_FAILED = "smoke_failed"
    #: The release's export (`network.onnx`) judged differently from torch fp32.
    PARITY_FAILED = "parity_failed"
    #: Anything unforeseen while preparing a release.
    LOAD_FAILED = "load_failed"

    @property
    def transient(self) -> bool:
        """Worth another try later (the network, S3); every other refusal is final."""
        return self is RefusalReason.DOWNLOAD_FAILED


class ReleaseRefused(Exception):
    """A release that must not be served: `reason` says why, `detail` says what."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = RefusalReason(reason), detail


class ObjectReader(Protocol):
    """What fetching needs of an object store (`worker.storage.ObjectStore` has it)."""

    def get(self, key: str) -> bytes: ...


# --- the manifest ----------------------------------------------------------------------


def read_manifest(path: Path) -> ModelManifest:
    """The manifest of an artifact folder (or the manifest file itself); refused if unreadable."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE if path.is_dir() else path
    try:
        return ModelManifest.model_validate(json.loads(manifest_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ReleaseRefused(
            RefusalReason.INVALID_MANIFEST,
            f"{manifest_path}: not a readable model manifest: {exc}",
        ) from exc


def fetch_manifest(store: ObjectReader, prefix: str) -> ModelManifest:
    """The manifest stored under `prefix` (e.g. `release_prefix(version)`), not yet trusted."""
    return _parse(_get(store, f"{prefix.rstrip('/')}/{MANIFEST_FILE}"), prefix)


# --- fetching --------------------------------------------------------------------------


def fetch_release(
    store: ObjectReader, prefix: str, into: Path, expected: ModelManifest | None = None
) -> ModelManifest:
    """Download `<prefix>/manifest.json` and every file it lists into the folder `into`.

    With `expected` (the manifest announced in Redis), the stored manifest must
    be that release: same version, same files; it is checked before any file is
    downloaded. Nothing is trusted here: `load_network` checks each file's sha256.
    """
    prefix = prefix.rstrip("/")
    raw = _get(store, f"{prefix}/{MANIFEST_FILE}")
    manifest = _parse(raw, prefix)
    if expected is not None and (
        manifest.version != expected.version or manifest.files != expected.files
    ):
        raise ReleaseRefused(
            RefusalReason.MANIFEST_MISMATCH,
            f"s3 manifest {manifest.version}/{manifest.digest[:12]} is not the announced "
            f"{expected.version}/{expected.digest[:12]}",
        )
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    (into / MANIFEST_FILE).write_bytes(raw)
    for file in manifest.files:  # plain names (the manifest's schema): never a path out
        (into / file.name).write_bytes(_get(store, f"{prefix}/{file.name}"))
    return manifest


# --- verifying and loading -------------------------------------------------------------


def verify_files(folder: Path, manifest: ModelManifest) -> list[Path]:
    """The paths of the manifest's files in `folder`, each present with its sha256."""
    paths = []
    for file in manifest.files:
        path = Path(folder) / file.name
        if not path.is_file():
            raise ReleaseRefused(RefusalReason.INVALID_ARTIFACT, f"{path}: file missing")
        digest = sha256_file(path)
        if digest != file.sha256:
            raise ReleaseRefused(
                RefusalReason.SHA256_MISMATCH,
                f"{path}: sha256 {digest} does not match manifest {file.sha256}",
            )
        paths.append(path)
    return paths


def load_network(path: Path) -> tuple[nn.Module, ModelManifest]:
    """Verify and load an artifact folder (or its manifest path) onto the CPU, in eval mode."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest = read_manifest(path)
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
    path: Path, device: str = "auto", precision: str = "fp32", runtime: str = "torch"
) -> InspectionModel:
    """A verified artifact folder as a model ready to serve on `device` (not warmed up).

    With `runtime` onnxruntime or openvino, the release's export runs it, once it
    passed the parity check; a release without an export is served by torch.
    """
    check_choice(runtime, precision)
    network, manifest = load_network(path)
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


def _get(store: ObjectReader, key: str) -> bytes:
    try:
        return store.get(key)
    except Exception as exc:  # S3 down, or no such object
        raise ReleaseRefused(RefusalReason.DOWNLOAD_FAILED, f"{key}: {exc!r}") from exc


def _parse(raw: bytes, prefix: str) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        raise ReleaseRefused(
            RefusalReason.INVALID_MANIFEST, f"{prefix}/{MANIFEST_FILE}: {exc}"
        ) from exc


def _described(manifest: ModelManifest) -> str:
    if manifest.backbone:
        return f"{manifest.architecture} on {manifest.backbone}"
    return manifest.architecture
