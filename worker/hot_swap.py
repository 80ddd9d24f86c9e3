"""Zero-downtime model swap: a new release is made ready beside the live model, then swapped.

A background thread follows the control plane: it listens to announcements on
`kenpin:model:releases` and reads `kenpin:model:current` every
`release_check_interval_s` (pub/sub loses messages sent while a worker
reconnects). For a release it has not seen, it prepares it (`prepare_release`, the one path a
starting worker takes too):

1. downloads `models/<version>/` from S3 into a staging folder beside `releases_dir`,
   having checked that the stored manifest is the announced one (same files),
2. loads it (`model.release`, the one path every process loads a release
   by): every file's sha256 verified, safetensors only, never pickle, the network
   of the manifest's architecture,
3. runs a smoke batch (finite scores, one score and one map per frame),
4. warms it up at the serving batch size,
5. and only then moves the staging folder to `releases_dir/<version>`;

a refusal at any step deletes the staging folder, so what lies in
`releases_dir/<version>` has always verified. The release is then offered to
the worker loop, which swaps it in between two batches (`Worker.step` calls
`take_ready`). A release failing any step is refused: logged, counted in
`kenpin_releases_refused_total{reason}`, recorded in the heartbeat and in
/readyz, and the old model keeps serving. A refused artifact is never retried
(versions are immutable, and a hash that did not match will not match next
time); a download that failed is retried after `release_retry_s`.

Once a release is swapped in, it is recorded as the last good release
(`kenpin:model:last_good`): what a worker starting while the current release is
refused falls back to (`worker.startup`).

The same thread publishes the worker's heartbeat with the version it serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model.loading import fetch_model
from model.release import RefusalReason, ReleaseRefused
from model.runtime import InspectionModel
from planes.control import ControlPlane
from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.common import utc_now
from schemas.control import WorkerHeartbeat
from schemas.manifest import ModelManifest
from schemas.object_layout import release_prefix
from worker.metrics import Health, WorkerMetrics
from worker.settings import WorkerSettings

log = get_logger(__name__)

# Background loading runs at a lower CPU priority than the loop, so on a small
# machine the swap does not slow the frames being judged meanwhile.
_LOADER_NICENESS = 10


def smoke_test(model: InspectionModel, batch: int = 2) -> None:
    """Judge a black and a noise frame; refuse a model whose output is malformed or not finite."""
    size = model.image_size
    rng = np.random.default_rng(0)
    frames = [np.zeros((size, size, 3), np.uint8)]
    frames += [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch - 1)]
    judged = model.judge(frames)
    if judged.scores.shape != (len(frames),):
        raise ReleaseRefused(RefusalReason.SMOKE_FAILED, f"scores of shape {judged.scores.shape}")
    if judged.maps.shape[0] != len(frames) or judged.maps.ndim != 3:
        raise ReleaseRefused(RefusalReason.SMOKE_FAILED, f"maps of shape {judged.maps.shape}")
    if not (np.isfinite(judged.scores).all() and np.isfinite(judged.maps).all()):
        raise ReleaseRefused(RefusalReason.SMOKE_FAILED, "scores or maps are not finite")
    thresholds = [t.threshold for t in model.manifest.products.values()]
    thresholds += [
        t.threshold for line in model.manifest.line_thresholds.values() for t in line.values()
    ]
    if not thresholds or not np.isfinite(thresholds).all():
        raise ReleaseRefused(RefusalReason.SMOKE_FAILED, "missing or non-finite product thresholds")


def prepare_release(
    settings: WorkerSettings, store: ObjectStore, manifest: ModelManifest
) -> InspectionModel:
    """Download, verify, load, smoke-test and warm up one release; raises ReleaseRefused.

    Everything happens in a staging folder, moved to `releases_dir/<version>` only
    once the release has passed every check, and deleted on any refusal: a
    refused artifact (a pickle named `model.safetensors`, say) must not lie where
    a verified release is expected. The model is fully in memory after loading,
    so moving its folder afterwards is safe.
    """
    folder = settings.releases_dir / manifest.version
    staging = folder.with_name(f".{manifest.version}.{os.getpid()}.part")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model = fetch_model(
            store,
            release_prefix(manifest.version),
            staging,
            expected=manifest,
            device=settings.device,
            precision=settings.precision,
            runtime=settings.runtime,
        )
        smoke_test(model)
        model.warm_up(settings.max_batch)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model


@dataclass
class _Refusal:
    reason: RefusalReason
    at: float


class HotSwap:
    """Prepares announced releases in a background thread and hands them to the worker loop."""

    def __init__(
        self,
        settings: WorkerSettings,
        control: ControlPlane,
        store: ObjectStore,
        active_version: str,
        *,
        metrics: WorkerMetrics | None = None,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.control = control
        self.store = store
        self.metrics = metrics or WorkerMetrics()
        self.health = health
        self.clock = clock
        self.active_version = active_version
        self.pending_version: str | None = None
        self._previous_version: str | None = None  # served before the last take_ready
        self._ready: InspectionModel | None = None
        self._lock = threading.Lock()
        self._refused: dict[tuple[str, str], _Refusal] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_check = float("-inf")
        self._last_beat = float("-inf")
        #: A release swapped in, to record as the last good one (None: nothing to record).
        self._last_good_due: ModelManifest | None = None

    # --- the loop's side -------------------------------------------------------------

    def take_ready(self) -> InspectionModel | None:
        """The model to swap in now, once; None when there is none (the usual case).

        The model counts as served from here on, in the same critical section: had
        `active_version` waited for `swapped`, this thread could see "not served,
        not ready" in between and prepare (and swap in) the same release twice.
        """
        with self._lock:
            model, self._ready = self._ready, None
            if model is not None:
                self._previous_version, self.active_version = self.active_version, model.version
                if self.pending_version == model.version:
                    self.pending_version = None
            return model

    def swapped(self, model: InspectionModel) -> None:
        """Record that the loop now serves `model` (metrics, health, heartbeat)."""
        with self._lock:
            previous = self._previous_version
        self.metrics.model_swaps.inc()
        self.metrics.set_model_version(model.version)
        if self.health is not None:
            self.health.model_served(model.version)  # a refusal before no longer applies
        log.info("model swapped", version=model.version, previous=previous)
        with self._lock:  # recorded by this object's thread, off the loop (`tick`)
            self._last_good_due = model.manifest
        self._beat_safely()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kenpin-hot-swap", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOADER_NICENESS)
        while not self._stop.is_set():
            try:
                for announced in self.control.announcements(timeout_s=0.5):
                    if self._stop.is_set():
                        return
                    if announced is not None:
                        log.info("release announced", version=announced.version)
                        self.consider(announced)
                    self.tick()
            except Exception as exc:  # Redis down: keep serving, try again shortly
                log.warning("control plane unavailable", error=repr(exc))
                self._stop.wait(2.0)

    def tick(self) -> None:
        """Periodic work: record a release swapped in, read the current one, beat."""
        with self._lock:
            served, self._last_good_due = self._last_good_due, None
        if served is not None and not record_last_good(self.control, served):
            with self._lock:  # Redis down: try again next tick, unless a newer swap came
                self._last_good_due = self._last_good_due or served
        now = self.clock()
        if now - self._last_check >= self.settings.release_check_interval_s:
            self._last_check = now
            current = self.control.current()
            if current is not None:
                self.consider(current)
        if now - self._last_beat >= self.settings.heartbeat_interval_s:
            self._beat_safely()

    # --- preparing a release ---------------------------------------------------------

    def consider(self, manifest: ModelManifest) -> InspectionModel | None:
        """Prepare `manifest`'s release unless it is served, ready, or refused already."""
        key = (manifest.version, manifest.digest)
        with self._lock:
            if manifest.version == self.active_version and self._ready is None:
                return None
            if self._ready is not None and self._ready.version == manifest.version:
                return None
            refusal = self._refused.get(key)
            if refusal is not None and (
                not refusal.reason.transient
                or self.clock() - refusal.at < self.settings.release_retry_s
            ):
                return None
            self.pending_version = manifest.version
        started = time.perf_counter()
        try:
            model = self.prepare(manifest)
        except ReleaseRefused as exc:
            self._refuse(key, exc)
            return None
        except Exception as exc:  # anything unforeseen is a refusal too, never a crash
            self._refuse(key, ReleaseRefused(RefusalReason.LOAD_FAILED, repr(exc)))
            return None
        with self._lock:
            if self._ready is not None:
                log.info("ready release superseded", version=self._ready.version)
            self._ready = model
        log.info(
            "release ready",
            version=manifest.version,
            seconds=round(time.perf_counter() - started, 2),
        )
        return model

    def prepare(self, manifest: ModelManifest) -> InspectionModel:
        """Download, verify, load, smoke-test and warm up one release; raises ReleaseRefused."""
        return prepare_release(self.settings, self.store, manifest)

    def remember_refusal(self, manifest: ModelManifest, reason: RefusalReason) -> None:
        """Record a refusal made elsewhere (at start), so the periodic check does not retry it.

        Without it a worker that fell back at start would download and refuse the
        current release again at every `release_check_interval_s`.
        """
        with self._lock:
            self._refused[(manifest.version, manifest.digest)] = _Refusal(
                RefusalReason(reason), self.clock()
            )

    def _refuse(self, key: tuple[str, str], exc: ReleaseRefused) -> None:
        with self._lock:
            self._refused[key] = _Refusal(exc.reason, self.clock())
            if self.pending_version == key[0]:
                self.pending_version = None
        self.metrics.releases_refused.labels(reason=exc.reason).inc()
        if self.health is not None:
            self.health.release_refused(key[0], exc.reason)
        log.error(
            "release refused, old model keeps serving",
            version=key[0],
            reason=exc.reason,
            detail=exc.detail,
            serving=self.active_version,
        )
        self._beat_safely()

    @property
    def refused_versions(self) -> list[str]:
        with self._lock:
            return sorted({version for version, _ in self._refused})

    # --- heartbeat -------------------------------------------------------------------

    def heartbeat(self) -> WorkerHeartbeat:
        with self._lock:
            beat = WorkerHeartbeat(
                worker_id=self.settings.worker_id,
                host=socket.gethostname(),
                active_version=self.active_version,
                pending_version=self.pending_version,
                refused_versions=sorted({version for version, _ in self._refused}),
                time=utc_now(),
            )
        self.control.heartbeat(beat, self.settings.heartbeat_ttl_s)
        self._last_beat = self.clock()
        return beat

    def _beat_safely(self) -> None:
        try:
            self.heartbeat()
        except Exception as exc:
            log.warning("heartbeat failed", error=repr(exc))


def record_last_good(control: ControlPlane, manifest: ModelManifest) -> bool:
    """Record a release as verified and served; False (logged) when Redis is unavailable.

    Never raises: the record only helps a later start, and must not stop this one.
    """
    try:
        control.set_last_good(manifest)
    except Exception as exc:
        log.warning("last good release not recorded", version=manifest.version, error=repr(exc))
        return False
    return True
