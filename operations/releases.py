"""Releases: an artifact in `s3://<bucket>/models/<version>/`, made current through Redis.

Order matters for the workers: the release's files first, then the manifest,
and only then `kenpin:model:current` and the announcement, so a worker that
hears of a release always finds all of it in S3 (`schemas.object_layout`,
`schemas.redis_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.release import read_manifest
from operations.retrain_queue import ReleaseHistory
from planes.control import ControlPlane
from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE, release_key, releases_prefix

log = get_logger(__name__)


class ReleaseError(RuntimeError):
    """An operator's request that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class ReleaseEntry:
    manifest: ModelManifest
    current: bool


def upload(
    store: ObjectStore, artifact_dir: Path, manifest: ModelManifest | None = None
) -> ModelManifest:
    """Copy an artifact folder to `models/<version>/`: its files, then its manifest.

    `manifest`: the folder's, when the caller holds it already (else read from it).
    """
    manifest = manifest or read_manifest(artifact_dir)
    for file in manifest.files:
        store.put(
            release_key(manifest.version, file.name), (Path(artifact_dir) / file.name).read_bytes()
        )
    store.put(
        release_key(manifest.version, MANIFEST_FILE),
        manifest.model_dump_json(indent=2).encode(),
        "application/json",
    )
    return manifest


def make_current(control: ControlPlane, manifest: ModelManifest) -> None:
    """Set `kenpin:model:current`, announce it, and remember it for rollback."""
    control.set_current(manifest)
    ReleaseHistory(control).push(manifest.version)
    log.info("release current", version=manifest.version, parent=manifest.parent_version)


def publish(
    store: ObjectStore,
    control: ControlPlane,
    artifact_dir: Path,
    manifest: ModelManifest | None = None,
) -> ModelManifest:
    """Upload an artifact and make it the current release (`manifest`: as `upload`'s)."""
    manifest = upload(store, artifact_dir, manifest)
    make_current(control, manifest)
    return manifest


def stored_manifest(store: ObjectStore, version: str) -> ModelManifest:
    key = release_key(version, MANIFEST_FILE)
    if not store.exists(key):
        raise ReleaseError(f"no release {version!r} in the bucket ({key} missing)")
    return ModelManifest.model_validate_json(store.get(key))


def list_releases(store: ObjectStore, control: ControlPlane) -> list[ReleaseEntry]:
    """Every release in the bucket, oldest first, marking the current one."""
    current = control.current()
    entries = []
    for obj in store.list(releases_prefix()):
        if obj.key.endswith(f"/{MANIFEST_FILE}"):
            manifest = ModelManifest.model_validate_json(store.get(obj.key))
            entries.append(
                ReleaseEntry(manifest, current is not None and current.version == manifest.version)
            )
    return sorted(entries, key=lambda e: (e.manifest.created, e.manifest.version))


def activate(store: ObjectStore, control: ControlPlane, version: str) -> ModelManifest:
    """Make a stored release current again (an operator's choice, no gate)."""
    manifest = stored_manifest(store, version)
    make_current(control, manifest)
    return manifest


def rollback(store: ObjectStore, control: ControlPlane) -> ModelManifest:
    """Go back to the release that was current before the current one."""
    history = ReleaseHistory(control)
    versions = history.versions()
    current = control.current()
    newest = 0
    while newest < len(versions) and current is not None and versions[newest] == current.version:
        newest += 1
    if newest >= len(versions):
        raise ReleaseError("no earlier release to roll back to")
    manifest = stored_manifest(store, versions[newest])
    history.drop_newest(newest)  # the target is now the head of the history
    control.set_current(manifest)
    log.info("rolled back", version=manifest.version, previous=current and current.version)
    return manifest
