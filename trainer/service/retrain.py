"""`kenpin-trainer serve`: retrain on a schedule and on request, gate, release.

One run, each stage timed and recorded in the request's outcome:

1. snapshot: list the normal store, hash the keys (the snapshot id), split
   into training and held-out normals;
2. download: the snapshot into a scratch folder in MVTec layout;
3. train: the learner of the recipe's architecture (`trainer.learning.learners`) on the
   training normals;
4. calibrate: thresholds per product from the validation split, exported as an
   artifact (`trainer.learning.export`) with the snapshot id and the parent release;
5. evaluate: candidate and current release on held-out normals and labelled
   anomalies (`trainer.service.gate`);
6. gate and release: a candidate not worse than the current release is
   uploaded to `models/<version>/`, made current and announced; otherwise the
   reason is recorded and nothing changes on the line.

A request for a line's own threshold (`RetrainRequest.line_threshold`) trains
nothing: the line's evidence is read, the current weights are gated at the
proposed threshold (`trainer.service.line_gate`) and released with it.

Only one run at a time across every trainer (`operations.retrain_queue.TrainerLock`). A
request is kept claimed by the trainer that took it for as long as that trainer
lives (`RetrainQueue.lease`), however long the run: it is taken over by another
trainer only once its claim has not been renewed for the claim time (3 lock
TTLs), i.e. when its trainer died. A request found finished when its trainer
gets the lock (its first trainer died between recording and acknowledging it)
is acknowledged, not run again.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.artifact import write_manifest
from model.loading import fetch_model, load_model
from model.release import RefusalReason, ReleaseRefused
from model.runtime import InspectionModel
from operations.line_calibration import EVIDENCE_VERSIONS, evidence_versions, line_proposal
from operations.normal_store import download, download_heldout, take_snapshot
from operations.releases import publish
from operations.retrain_queue import QueuedRequest, RetrainQueue, TrainerLock
from planes.control import ControlPlane
from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.common import utc_now
from schemas.control import LineThresholdChange, RetrainOutcome
from schemas.object_layout import release_prefix
from trainer.learning.config import RECIPE_FIELDS, RecipeError, TrainConfig, recipe_config
from trainer.learning.export import export, new_version
from trainer.learning.learners import fit
from trainer.learning.train import TrainResult
from trainer.service.gate import GateImages, judge, labelled_anomalies
from trainer.service.line_gate import judge_line_threshold
from trainer.service.settings import TrainerSettings
from trainer.service.telemetry import TrainerHealth, TrainerMetrics

log = get_logger(__name__)

#: What the service trains with: (data root, config, progress bars) -> result. A parameter
#: so that tests can make training slow, or its result bad, by construction.
TrainFunction = Callable[[Path, TrainConfig, bool], TrainResult]


class RunFailed(RuntimeError):
    """A run that could not finish (no data, broken current release, ...)."""


class RetrainService:
    """Takes retrain requests one at a time and turns each into a release or a refusal."""

    def __init__(
        self,
        settings: TrainerSettings,
        control: ControlPlane | None = None,
        store: ObjectStore | None = None,
        train_fn: TrainFunction = fit,
        metrics: TrainerMetrics | None = None,
        health: TrainerHealth | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or TrainerMetrics()
        self.health = health or TrainerHealth(livez_stall_s=settings.trainer_livez_stall_s)
        self.control = control or ControlPlane.from_settings(settings)
        self.store = store or ObjectStore.from_settings(settings)
        self.queue = RetrainQueue(self.control, settings.outcome_ttl_s)
        self.train_fn = train_fn
        # Longer than the lock's TTL: a dead trainer's lock has expired before its
        # request is taken over, so the trainer taking it over can run it at once.
        self.claim_idle_ms = int(settings.lock_ttl_s * 3000)
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self.health.stop()
        self._stop.set()

    # --- the service loop --------------------------------------------------------------

    def serve(self) -> None:
        """Until stopped: schedule requests when due, run the next request when the lock is free."""
        log.info(
            "trainer started",
            trainer=self.settings.trainer_id,
            interval_s=self.settings.retrain_interval_s,
        )
        while not self._stop.is_set():
            self.schedule()
            queued = self.queue.next(
                self.settings.trainer_id, block_ms=1000, claim_idle_ms=self.claim_idle_ms
            )
            self.metrics.queue_depth.set(self.queue.depth())
            self.health.loop_turned(redis_ok=True)  # both round trips above answered
            if queued is not None:
                self.handle(queued)
        log.info("trainer stopped")

    def schedule(self) -> str | None:
        """Add a scheduled request once per interval slot (shared by all trainers)."""
        interval = self.settings.retrain_interval_s
        if interval <= 0:
            return None
        slot = int(time.time() // interval)
        return self.queue.request_once(f"{int(interval)}:{slot}", "scheduled retrain", "schedule")

    def handle(self, queued: QueuedRequest) -> RetrainOutcome | None:
        """Wait for the lock, run, record the outcome, acknowledge the request.

        The request stays claimed by this trainer from the moment it was taken
        until it is acknowledged. None: another trainer took it over while this
        one waited for the lock (this one's renewals did not reach Redis in time).
        """
        me = self.settings.trainer_id
        with self.queue.lease(queued.request_id, me, self.claim_idle_ms) as lease:
            lock = TrainerLock(self.control, me, self.settings.lock_ttl_s)
            while not lock.acquire():
                if lease.lost.is_set():
                    log.warning("request taken over by another trainer", request=queued.request_id)
                    return None
                if self._stop.wait(1.0):
                    raise RunFailed("stopped while waiting for the training lock")
            with lock:
                done = self.queue.outcome(queued.request_id)
                if done is not None and done.final:
                    log.info("request already finished", request=queued.request_id)
                    outcome = done
                else:
                    outcome = self.run(queued)
            if lease.lost.is_set() or lock.lost.is_set():
                log.warning(
                    "claim or lock lost during the run: another trainer may have run too",
                    request=queued.request_id,
                )
        self.queue.ack(queued.request_id)
        return outcome

    # --- one run -----------------------------------------------------------------------

    def run(self, queued: QueuedRequest) -> RetrainOutcome:
        """One retrain; never raises for a failed run: the outcome says what happened."""
        outcome = RetrainOutcome(
            request_id=queued.request_id,
            status="running",
            detail=queued.request.reason,
            trainer=self.settings.trainer_id,
            updated=utc_now(),
        )
        self._record(outcome)
        self.health.run_started()
        self.metrics.running.set(1)
        log.info("retrain started", request=queued.request_id, reason=queued.request.reason)
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.settings.work_dir))
        try:
            outcome = self._run(queued, outcome, scratch)
        except Exception as exc:
            log.exception("retrain failed", request=queued.request_id)
            outcome = outcome.model_copy(update={"status": "failed", "detail": repr(exc)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self.metrics.running.set(0)
            self.health.run_ended()
        self._record(outcome)
        self.metrics.run_finished(outcome)
        log.info(
            "retrain finished",
            request=queued.request_id,
            status=outcome.status,
            detail=outcome.detail,
            version=outcome.version,
            stages=outcome.stages,
        )
        return outcome

    def _record(self, outcome: RetrainOutcome) -> None:
        self.queue.record(outcome.model_copy(update={"updated": utc_now()}))

    @contextmanager
    def _stage(self, outcome: RetrainOutcome, name: str) -> Iterator[None]:
        log.info("stage", stage=name, request=outcome.request_id)
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        outcome.stages[name] = round(seconds, 2)
        self.metrics.stage_finished(name, seconds)
        self._record(outcome)

    def _run(self, queued: QueuedRequest, outcome: RetrainOutcome, scratch: Path) -> RetrainOutcome:
        if queued.request.line_threshold is not None:
            return self._line_threshold(queued, queued.request.line_threshold, outcome, scratch)
        s = self.settings
        with self._stage(outcome, "snapshot"):
            snap = take_snapshot(
                self.store, s.holdout_fraction, s.max_normals_per_product, s.min_normals_per_product
            )
            outcome.snapshot_id = snap.snapshot_id
            if not snap.products:
                raise RunFailed(f"no product has enough normals: {snap.skipped}")
        with self._stage(outcome, "download"):
            train_root, heldout = download(self.store, snap, scratch / "data")
            current = self.control.current()
            outcome.parent_version = current.version if current else None
            current_model = self._current_model(current, scratch / "current")
        with self._stage(outcome, "train"):
            result = self.train_fn(
                train_root, training_config(s, queued.request.recipe), s.progress
            )
        with self._stage(outcome, "calibrate"):
            version = f"{new_version()}-{snap.snapshot_id[:8]}"
            artifact = scratch / "candidate"
            # files on disk, the manifest in memory: written once, complete, if released
            manifest = export(
                result,
                artifact,
                version,
                s.threshold_quantile,
                outcome.parent_version,
                onnx=bool(s.export_runtimes),
                write=False,
                per_product=s.product_threshold_quantiles,
            )
            outcome.version = version
        with self._stage(outcome, "evaluate"):
            report = judge(
                load_model(artifact, device="cpu", manifest=manifest),
                artifact,
                current_model,
                GateImages(heldout, labelled_anomalies(s.anomalies_dir, snap.products)),
                s.gate_policy,
                s.export_runtimes,
            )
            outcome.gate = report
        outcome.detail = "; ".join(report.reasons)
        if not report.released:
            outcome.status = "refused"
            log.warning("candidate refused by the gate", version=version, reasons=report.reasons)
            return outcome
        with self._stage(outcome, "release"):
            manifest = manifest.model_copy(
                update={
                    "metrics": {
                        "gate": report.candidate.model_dump(mode="json"),
                        "at_release": utc_now().isoformat(),
                    },
                    "data": {
                        **manifest.data,
                        **snap.summary(),
                        "request_id": queued.request_id,
                        "reason": queued.request.reason,
                    },
                }
            )
            write_manifest(artifact, manifest)
            publish(self.store, self.control, artifact, manifest)
        outcome.status = "released"
        return outcome

    def _line_threshold(
        self,
        queued: QueuedRequest,
        change: LineThresholdChange,
        outcome: RetrainOutcome,
        scratch: Path,
    ) -> RetrainOutcome:
        """No training: the current weights released with one line's own threshold, gated."""
        s = self.settings
        with self._stage(outcome, "evidence"):
            current = self.control.current()
            if current is None:
                raise RunFailed("no current release whose line threshold could change")
            outcome.parent_version = current.version
            if current.version != change.base_version:
                outcome.status = "refused"
                outcome.detail = (
                    f"the current release is {current.version}, not {change.base_version} whose "
                    "counts were shown: look at the line's counts again and propose anew"
                )
                return outcome
            try:
                proposal = line_proposal(
                    self.control,
                    current,
                    change.line,
                    change.product,
                    change.target_false_alarm_rate,
                    s.evidence_min_normals,
                )
            except ValueError as exc:
                raise RunFailed(str(exc)) from exc
        with self._stage(outcome, "download"):
            snap = take_snapshot(
                self.store, s.holdout_fraction, s.max_normals_per_product, s.min_normals_per_product
            )
            outcome.snapshot_id = snap.snapshot_id
            heldout = download_heldout(self.store, snap, scratch / "data", [change.product])
            folder = scratch / "current"
            model = self._current_model(current, folder)
            assert model is not None
        version = f"{new_version()}-{change.line}"
        outcome.version = version
        with self._stage(outcome, "evaluate"):
            anomalies = labelled_anomalies(s.anomalies_dir, [change.product])
            report = judge_line_threshold(
                model, proposal, version, GateImages(heldout, anomalies), s.gate_policy
            )
            outcome.gate = report
        outcome.detail = "; ".join(report.reasons)
        if not report.released:
            outcome.status = "refused"
            log.warning(
                "line threshold refused by the gate", version=version, reasons=report.reasons
            )
            return outcome
        with self._stage(outcome, "release"):
            lines = {line: dict(entries) for line, entries in current.line_thresholds.items()}
            lines.setdefault(change.line, {})[change.product] = proposal.entry()
            manifest = current.model_copy(
                update={
                    "version": version,
                    "created": utc_now(),
                    "parent_version": current.version,
                    "line_thresholds": lines,
                    "metrics": {
                        **current.metrics,
                        "line_gate": report.candidate.model_dump(mode="json"),
                        "at_release": utc_now().isoformat(),
                    },
                    "data": {
                        **current.data,
                        EVIDENCE_VERSIONS: list(evidence_versions(current)),
                        "request_id": queued.request_id,
                        "reason": queued.request.reason,
                    },
                }
            )
            write_manifest(folder, manifest)
            publish(self.store, self.control, folder, manifest)
        outcome.status = "released"
        return outcome

    def _current_model(self, current, folder: Path) -> InspectionModel | None:
        """The current release, loaded to be measured beside the candidate."""
        if current is None:
            return None
        try:
            return fetch_model(
                self.store, release_prefix(current.version), folder, expected=current, device="cpu"
            )
        except ReleaseRefused as exc:
            if exc.reason is RefusalReason.MANIFEST_MISMATCH:
                raise RunFailed(
                    f"stored release {current.version} is not the current manifest: {exc.detail}"
                ) from exc
            raise RunFailed(f"current release {current.version} refused: {exc}") from exc


def training_config(
    settings: TrainerSettings, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The recipe of the settings, with a request's overrides for this run only."""
    recipe = {name: getattr(settings, name) for name in RECIPE_FIELDS}
    try:
        return recipe_config(recipe, overrides)
    except RecipeError as exc:
        raise RunFailed(str(exc)) from exc
