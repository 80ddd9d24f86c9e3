"""Releases: what a release is made of, fetched and verified, or refused; torch-free.

A release (in the bucket, or an artifact folder on disk) is a manifest and the
files it lists, each with its sha256. This module reads and fetches them and
checks every digest; turning the verified files into a network is
`model.loading`'s business (torch). The split lets the console and the
operator commands read a release's manifest without importing torch.

1. `fetch_release`: `<prefix>/manifest.json` and every file it lists, into a
   folder; optionally checked against the manifest that was announced;
2. `verify_files`: every file present, with the sha256 the manifest gives;
3. `model.loading.load_network` / `load_model` / `fetch_model`: the verified
   tensors in the network of the manifest's `architecture`, served by the
   configured runtime.

Anything wrong raises `ReleaseRefused`, whose `reason` (a `RefusalReason`) is
the label of `kenpin_releases_refused_total{reason}`, the reason in /readyz and
in the logs; callers decide on the reason, never on the error's text.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE


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
    """What fetching needs of an object store (`planes.storage.ObjectStore` has it)."""

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


# --- verifying ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
