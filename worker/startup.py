"""Which model a worker starts with: the current release, else the newest one that verifies.

A worker without a local model starts with the release named by
`kenpin:model:current`. That release can be refused (a pickle renamed
`model.safetensors`, weights that do not match their sha256, a failed smoke
batch): a running worker then keeps serving its old model, and a starting
worker must do the equivalent rather than exit and crash-loop. So the start
takes the same path as the hot swap (`worker.hot_swap.prepare_release`: staging,
verification, smoke batch, and only then `releases_dir/<version>`), and on a
refusal logs it, counts it in `kenpin_releases_refused_total{reason}` and tries,
newest first,

1. the last good release (`kenpin:model:last_good`, recorded by workers that
   served it),
2. the release history (`kenpin:model:history`, pushed by the trainer on publish),

skipping versions already tried. /readyz then names the version served and
why. When nothing verifies, `NoModelToServe` says so in one sentence and the
command exits 2, without a traceback: retrying cannot help until an operator
acts.

A worker with a local model (`model_path`, `model_s3_key`) starts with it, as
before; its hot swap follows the current release from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from model.loading import load_model
from model.release import RefusalReason, ReleaseRefused, fetch_manifest, fetch_release
from model.runtime import InspectionModel
from planes.control import ControlPlane
from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.manifest import ModelManifest
from schemas.object_layout import MANIFEST_FILE, release_prefix
from worker.hot_swap import prepare_release, record_last_good
from worker.metrics import Health, WorkerMetrics
from worker.settings import WorkerSettings

log = get_logger(__name__)
T = TypeVar("T")

#: Fallback releases tried at most, after the current one. Each try downloads and
#: loads a model; when this many in a row are refused the cause is not one release
#: (S3 unreachable, a device that cannot run any of them) and a person must look.
MAX_FALLBACKS = 5


class NoModelToServe(RuntimeError):
    """No release verified and there is no usable local model: the worker cannot start."""


@dataclass(frozen=True)
class Refusal:
    """A release refused at start; with its manifest, the hot swap will not try it again."""

    version: str
    reason: RefusalReason
    detail: str
    manifest: ModelManifest | None = None  # None: the stored manifest itself was unreadable


@dataclass
class StartModel:
    """The model a worker starts with, where it came from, and what was refused on the way."""

    model: InspectionModel
    source: str  # "local", "current", "last good" or "release history"
    refused: list[Refusal] = field(default_factory=list)
    reason: str | None = None  # why this is not the current release; None when it is


#: How /readyz and the logs name a fallback: "serving last good v1: ...".
_SERVING = {
    "last good": "serving last good {version}",
    "release history": "serving {version} from the release history",
}


def start_model(
    settings: WorkerSettings,
    control: ControlPlane,
    store: ObjectStore,
    *,
    metrics: WorkerMetrics,
    health: Health,
) -> StartModel:
    """The model to start serving, verified and warmed up; raises NoModelToServe.

    Also tells `health` what is served and why, and records a release served
    from the bucket as the last good one.
    """
    if settings.model_s3_key or (settings.model_path / MANIFEST_FILE).is_file():
        return _local(settings, store, health)
    if not settings.hot_swap:
        raise NoModelToServe(
            f"no model at {settings.model_path} (no {MANIFEST_FILE}), no KENPIN_MODEL_S3_KEY, "
            "and hot swap is off: nothing names a release to serve"
        )
    current = _read(control.current, "current release")
    refused: list[Refusal] = []
    if current is not None:
        served = _try(settings, store, "current", current.version, lambda: current, refused)
        if served is not None:
            health.model_served(current.version)
            record_last_good(control, current)
            return StartModel(served[0], "current")
        _count(metrics, refused[-1], "current")
    tried = {current.version} if current is not None else set()
    for source, version, manifest_of in _fallbacks(control, store, tried):
        served = _try(settings, store, source, version, manifest_of, refused)
        if served is None:
            _count(metrics, refused[-1], source)
            continue
        model, manifest = served
        serving = _SERVING[source].format(version=version)
        if current is None:
            reason, refused_now = f"{serving}: no current release could be read", None
        else:
            first = refused[0]
            reason = f"{serving}: current release {current.version} refused ({first.reason})"
            refused_now = {"version": current.version, "reason": first.reason}
        log.warning(
            "serving a fallback release",
            version=version,
            source=source,
            current=None if current is None else current.version,
            why=reason,
        )
        health.model_served(version, reason=reason, refused=refused_now)
        record_last_good(control, manifest)
        return StartModel(model, source, refused, reason)
    if current is None:
        raise NoModelToServe(
            f"no model at {settings.model_path}, no current release could be read, and no "
            f"earlier release verified ({len(refused)} tried)"
        )
    first = refused[0]
    raise NoModelToServe(
        f"current release {current.version} refused ({first.reason}: {first.detail}); "
        f"no earlier release verified ({len(refused) - 1} tried) and there is no model at "
        f"{settings.model_path}"
    )


def _local(settings: WorkerSettings, store: ObjectStore, health: Health) -> StartModel:
    """The configured local artifact; one that fails to load is a configuration error."""
    try:
        model = load_local_model(settings, store)
    except Exception as exc:
        where = settings.model_s3_key or str(settings.model_path)
        raise NoModelToServe(f"the configured model {where} cannot be served: {exc}") from exc
    health.model_served(model.version)
    return StartModel(model, "local")


def load_local_model(settings: WorkerSettings, store: ObjectStore | None = None) -> InspectionModel:
    """The model the settings name (`model_s3_key`, else `model_path`), verified and warmed up.

    A model under `model_s3_key` is downloaded into `model_path` first; either
    way it is loaded by `model.release`, as every release is.
    """
    path = settings.model_path
    if settings.model_s3_key:
        store = store or ObjectStore.from_settings(settings)
        log.info("fetching model", key=settings.model_s3_key, into=str(path))
        fetch_release(store, settings.model_s3_key, path)
    model = load_model(
        path, device=settings.device, precision=settings.precision, runtime=settings.runtime
    )
    model.warm_up(settings.max_batch)
    return model


def _try(
    settings: WorkerSettings,
    store: ObjectStore,
    source: str,
    version: str,
    manifest_of: Callable[[], ModelManifest],
    refused: list[Refusal],
) -> tuple[InspectionModel, ModelManifest] | None:
    """Prepare one release (the hot swap's path); a refusal is appended, and gives None."""
    manifest: ModelManifest | None = None
    try:
        manifest = manifest_of()
        return prepare_release(settings, store, manifest), manifest
    except ReleaseRefused as exc:
        refused.append(Refusal(version, exc.reason, exc.detail, manifest))
    except Exception as exc:  # anything unforeseen is a refusal too, as in the hot swap
        refused.append(Refusal(version, RefusalReason.LOAD_FAILED, repr(exc), manifest))
    return None


def _count(metrics: WorkerMetrics, refusal: Refusal, source: str) -> None:
    """Log and count a refusal at start exactly as the hot swap does while running."""
    metrics.releases_refused.labels(reason=refusal.reason).inc()
    log.error(
        "release refused",
        version=refusal.version,
        reason=refusal.reason,
        detail=refusal.detail,
        at="start",
        candidate=source,
    )


def _fallbacks(
    control: ControlPlane, store: ObjectStore, tried: set[str]
) -> Iterator[tuple[str, str, Callable[[], ModelManifest]]]:
    """(source, version, manifest getter) of releases to fall back to, newest first, once each.

    Lazy: the history is read, and each stored manifest fetched, only once the
    candidates before it were refused.
    """
    offered = 0
    last_good = _read(control.last_good, "last good release")
    if last_good is not None and last_good.version not in tried:
        tried.add(last_good.version)
        offered += 1
        yield "last good", last_good.version, lambda: last_good
    for version in _read(control.history, "release history") or []:
        if version in tried:
            continue
        if offered >= MAX_FALLBACKS:
            log.error("fallback releases exhausted", tried=offered)
            return
        tried.add(version)
        offered += 1
        yield "release history", version, partial(fetch_manifest, store, release_prefix(version))


def _read(read: Callable[[], T], what: str) -> T | None:
    """`read()`, or None when the control plane cannot answer (logged, not raised)."""
    try:
        return read()
    except Exception as exc:  # Redis down, or a value kenpin cannot read
        log.warning("control plane unavailable at start", reading=what, error=repr(exc))
        return None
