"""Retraining on the REAL local stack: the gate refuses a worse candidate; end to end release.

The gate's decisions here are decided by construction, not by how well a few
epochs on a few dozen tiny images happen to learn (which varies with the
held-out split, itself a hash of keys that hold the run id and the date):

- a *blind* model has a zeroed student and no memory head: its features are 0 for
  every input, so 1 - cosine is exactly 1 everywhere and every image gets the same score.
  Its image AUROC is exactly 0.5 (all ties), and with threshold 0 it flags every
  part (false-alarm rate exactly 1.0);
- a threshold above any possible score (at most 2 per scale) flags nothing
  (false-alarm rate exactly 0).

(c) A blind candidate that flags every part is measured against a trained
    current release that flags none, on the same held-out normals and labelled
    anomalies, and refused for its false alarms.
(d) import-normals -> `kenpin-trainer retrain` -> the service trains, gates and
    releases -> a running worker swaps and judges with the new release; the time
    of each stage is printed. The line starts on a blind bootstrap, which any
    candidate passes (no more false alarms than 1.0; AUROC within 0.5 of 0.5).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kafka import KafkaProducer

from model import loading
from operations.normal_store import import_folder
from operations.releases import publish
from operations.retrain_queue import RetrainQueue, TrainerLock
from planes.control import ControlPlane
from planes.settings import settings_env
from planes.storage import ObjectStore
from tests.integration.frames import produce_frames
from tests.integration.releases import run_id, start_worker, wait_for
from tests.integration.test_worker_pipeline import collect_outcomes, create_topics, run_settings
from tests.integration.trainer_process import training_marker
from trainer.cli import main as trainer_cli
from trainer.learning.config import TrainConfig
from trainer.learning.export import export
from trainer.learning.synthetic_dataset import generate
from trainer.learning.train import TrainResult, train
from trainer.service import gate, retrain
from trainer.service.retrain import RetrainService
from trainer.service.settings import TrainerSettings

PRODUCTS = ("washer", "tile")


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("retrainline"),
        products=PRODUCTS,
        size=64,
        train=16,
        test_good=6,
        test_per_defect=2,
        seed=1,
    )


NOTHING_FLAGGED = 1000.0  # above any score without a memory head: 1 - cosine <= 2 per map


def _blind(result: TrainResult) -> TrainResult:
    """Zero the student and drop the memory head, so every image gets the same score:
    AUROC exactly 0.5."""
    with torch.no_grad():
        for tensor in result.network.student.state_dict().values():
            tensor.zero_()
    result.network.drop_memory()
    result.manifest_fields = result.network.manifest_fields()
    return result


def _thresholds(result: TrainResult, threshold: float) -> TrainResult:
    """Calibrate every product to `threshold` (0: every part flagged)."""
    result.val_scores = {p: np.full_like(s, threshold) for p, s in result.val_scores.items()}
    return result


def _flags_everything(data_dir: Path, config: TrainConfig, progress: bool) -> TrainResult:
    """The service's training, made worse by construction: blind, threshold 0."""
    return _thresholds(_blind(train(data_dir, config, progress)), 0.0)


def _model(
    root: Path,
    out: Path,
    version: str,
    epochs: int,
    blind: bool = False,
    threshold: float | None = None,
) -> Path:
    # no memory head: its weighted distances have no bound that NOTHING_FLAGGED could exceed
    config = TrainConfig(image_size=64, epochs=epochs, batch_size=8, memory_patches=0)
    result = train(root, config, progress=False)
    if blind:
        _blind(result)
    if threshold is not None:
        _thresholds(result, threshold)
    export(result, out / version, version=version)
    return out / version


def _trainer_settings(stack, run: str, tmp_path: Path, anomalies: Path, **overrides):
    values = dict(
        redis_url=stack.redis_url,
        control_prefix=f"{run}:",
        s3_endpoint=stack.s3_endpoint,
        s3_access_key=stack.s3_access_key,
        s3_secret_key=stack.s3_secret_key,
        s3_bucket=stack.s3_bucket,
        anomalies_dir=anomalies,
        work_dir=tmp_path / "runs",
        image_size=64,
        batch_size=8,
        epochs=3,
        progress=False,
        trainer_id=f"{run}-trainer",
        # the floors are the unit tests' (test_gate_decide); here only the comparison,
        # which these tests decide by construction, may decide
        gate_min_synthetic_recall=0.0,
    )
    values.update(overrides)
    return TrainerSettings(**values)


def _seed_normals(store: ObjectStore, line: Path, run: str) -> int:
    # products are namespaced by run: the bucket is shared by the whole test session
    return sum(
        len(import_folder(store, f"{run}{p}", line / p / "train" / "good"))
        + len(import_folder(store, f"{run}{p}", line / p / "test" / "good"))
        for p in PRODUCTS
    )


def _spy(monkeypatch, module, name: str, calls: list) -> None:
    """Record the first argument of every call of `module.name`, then call it."""
    real = getattr(module, name)

    def spy(first, *args, **kwargs):
        calls.append(first)
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_a_worse_candidate_is_refused_by_the_gate(local_stack, line, tmp_path, monkeypatch):
    """Refused by the gate, in one direction: each held-out image decoded once for both
    models and the export's check, the candidate's manifest never written nor read back."""
    run = run_id("g")
    # the model knows the run's product names: train on a renamed copy of the line
    renamed = tmp_path / "line"
    for p in PRODUCTS:
        (renamed / f"{run}{p}").mkdir(parents=True)
        for sub in ("train", "test", "ground_truth"):
            (renamed / f"{run}{p}" / sub).symlink_to(line / p / sub)
    settings = _trainer_settings(local_stack, run, tmp_path, renamed, epochs=0)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    # trained, and flagging no normal part: false-alarm rate exactly 0
    good = _model(renamed, tmp_path, f"{run}-good", epochs=3, threshold=NOTHING_FLAGGED)
    current = publish(store, control, good)
    _seed_normals(store, line, run)

    decoded, manifests_read, manifests_written = [], [], []
    _spy(monkeypatch, gate, "read_images", decoded)
    _spy(monkeypatch, loading, "read_manifest", manifests_read)
    _spy(monkeypatch, retrain, "write_manifest", manifests_written)

    # the candidate flags every part: false-alarm rate exactly 1.0 > 0 + 0.02
    service = RetrainService(settings, control, store, train_fn=_flags_everything)
    request_id = service.queue.request("a candidate that flags every part", "test")
    queued = service.queue.next(settings.trainer_id, block_ms=1000, claim_idle_ms=60_000)
    assert queued is not None and queued.request_id == request_id
    outcome = service.handle(queued)

    print(f"\ngate: {outcome.status}: {outcome.detail}; stages {outcome.stages}")
    assert outcome.status == "refused", outcome.detail
    assert "false alarms on held-out normals 1.000 > current 0.000" in outcome.detail
    assert outcome.gate.candidate.image_auroc == 0.5  # blind: all ties
    assert not outcome.gate.released and outcome.gate.reasons == outcome.detail.split("; ")
    assert RetrainQueue(control).outcome(request_id).status == "refused"
    assert control.current().version == current.version  # nothing released
    paths = [path for batch in decoded for path in batch]
    assert paths and len(paths) == len(set(paths))  # both models, one decoding
    assert manifests_written == []
    assert [Path(p).name for p in manifests_read] == ["current"]  # the fetched release only


def test_end_to_end_retrain_release_and_swap(local_stack, line, tmp_path, monkeypatch):
    run = run_id("e")
    timings: dict[str, float] = {}
    renamed = tmp_path / "line"
    for p in PRODUCTS:
        (renamed / f"{run}{p}").mkdir(parents=True)
        for sub in ("train", "test", "ground_truth"):
            (renamed / f"{run}{p}" / sub).symlink_to(line / p / sub)
    # against the blind bootstrap (AUROC 0.5, false alarms 1.0) these tolerances pass any
    # candidate: the release must not hang on how well 3 epochs of tiny data learn
    settings = _trainer_settings(
        local_stack, run, tmp_path, renamed, max_false_alarm_increase=0.05, max_auroc_drop=0.5
    )
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)

    # the line starts on a blind bootstrap release that flags every part, served by a worker
    bootstrap = _model(renamed, tmp_path, f"{run}-bootstrap", epochs=0, blind=True, threshold=0)
    publish(store, control, bootstrap)
    frames_line = f"{run}-l1"
    topic = f"kenpin.frames.{frames_line}"
    create_topics(local_stack, [topic], partitions=1)
    worker_settings = run_settings(
        local_stack,
        bootstrap,
        run,
        control_prefix=f"{run}:",
        releases_dir=tmp_path / "releases",
        release_check_interval_s=1.0,
        heartbeat_interval_s=0.5,
    )
    worker = start_worker(worker_settings, bootstrap)
    manifests_written: list = []
    _spy(monkeypatch, retrain, "write_manifest", manifests_written)
    service = RetrainService(settings, control, store)
    serving = threading.Thread(target=service.serve, daemon=True)
    serving.start()
    try:
        started = time.perf_counter()
        for p in PRODUCTS:
            for folder in ("train/good", "test/good"):
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    assert (
                        trainer_cli(
                            ["import-normals", "--product", f"{run}{p}", str(line / p / folder)]
                        )
                        == 0
                    )
        timings["import-normals"] = time.perf_counter() - started

        started = time.perf_counter()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert trainer_cli(["retrain", "--reason", "new supplier"]) == 0
        request_id = out.getvalue().strip()
        queue = RetrainQueue(control)
        outcome = wait_for(
            lambda: (
                (o := queue.outcome(request_id))
                and o.status in ("released", "refused", "failed")
                and o
            ),
            150,
            "the retrain outcome",
            every_s=0.5,
        )
        timings["request -> released"] = time.perf_counter() - started
        assert outcome.status == "released", (outcome.detail, outcome.gate)
        bootstrap_measured = outcome.gate.current
        assert bootstrap_measured.version == f"{run}-bootstrap"
        assert bootstrap_measured.false_alarm_rate == 1.0
        assert bootstrap_measured.image_auroc == 0.5
        assert control.current().version == outcome.version
        assert control.current().parent_version == f"{run}-bootstrap"
        assert control.current().data["snapshot_id"] == outcome.snapshot_id
        assert len(manifests_written) == 1  # once, complete, for the release
        assert control.current().metrics["gate"]["version"] == outcome.version

        wait_for(
            lambda: worker.hot_swap.active_version == outcome.version, 60, "the worker to swap"
        )
        timings["released -> worker swapped"] = (
            time.perf_counter() - started - timings["request -> released"]
        )
        producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
        images = [(line / p / "test" / "good" / "000.png", f"{run}{p}") for p in PRODUCTS]
        sent = produce_frames(producer, topic, frames_line, images, bad=False)
        producer.close()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{frames_line}"], expected=len(sent), timeout_s=60
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert trainer_cli(["retrain-status", request_id]) == 0
            assert trainer_cli(["release", "list"]) == 0
        listing = out.getvalue()
    finally:
        service.stop()
        serving.join(timeout=30)
        worker.stop()
    assert {v.model_version for v in verdicts} == {outcome.version}
    assert f"* {outcome.version}" in listing
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.stages.items())
    print(
        "\nend to end: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; service stages: {stages}; gate: {outcome.detail}"
    )


def _environment(stack, settings: TrainerSettings) -> dict[str, str]:
    """`settings` as the `KENPIN_*` variables a trainer process reads."""
    return {**os.environ, **settings_env(settings)}


class StopsHere(RuntimeError):
    """What the second trainer's training raises: the test needs to know it ran, not a model."""


def test_a_long_run_keeps_its_request_and_a_dead_trainers_is_taken_over(
    local_stack, line, tmp_path
):
    """Two trainers, one request, a training step far longer than the claim time.

    While the first trainer lives, its claim stays fresh and the second never
    gets the request; once the first is killed (no more renewals), the second
    takes the request over after the claim time and runs it, once.
    """
    run = run_id("l")
    # lock TTL 0.6 s: a request is taken over after 1.8 s without renewal
    first_settings = _trainer_settings(
        local_stack, run, tmp_path, None, lock_ttl_s=0.6, trainer_id=f"{run}-first"
    )
    second_settings = first_settings.model_copy(update={"trainer_id": f"{run}-second"})
    first_id, second_id = first_settings.trainer_id, second_settings.trainer_id
    store = ObjectStore.from_settings(first_settings)
    control = ControlPlane.from_url(first_settings.redis_url, first_settings.control_prefix)
    _seed_normals(store, line, run)  # a run reaches its training step only with normals
    queue = RetrainQueue(control)
    request_id = queue.request("a retrain longer than the claim time", "test")

    trained: list[Path] = []

    def train_once(data_dir: Path, config: TrainConfig, progress: bool) -> TrainResult:
        trained.append(data_dir)
        raise StopsHere("the second trainer's training step ran")

    second = RetrainService(second_settings, control, store, train_fn=train_once)
    claim_ms = second.claim_idle_ms
    log_file = (tmp_path / "first-trainer.log").open("w")
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.trainer_process"],
        env=_environment(local_stack, first_settings),
        cwd=Path(__file__).resolve().parents[2],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: control.redis.get(control.key(training_marker(first_id))),
            90,
            "the first trainer to be in its training step",
        )
        # alive: for two claim times (six lock TTLs), the request stays the first's and
        # fresh, so does its training lock, and the second trainer, asking for work all
        # along, gets nothing
        lock = TrainerLock(control, second_id, first_settings.lock_ttl_s)
        until = time.monotonic() + 2 * claim_ms / 1000
        polls = 0
        while time.monotonic() < until:
            [held] = queue.pending()
            assert (held.request_id, held.trainer) == (request_id, first_id)
            assert held.idle_ms < claim_ms, held
            assert (lock.holder() or "").startswith(f"{first_id}:")
            assert second.queue.next(second_id, block_ms=100, claim_idle_ms=claim_ms) is None
            polls += 1
        assert polls >= 5

        first.kill()  # dies mid-run: its renewals stop
        first.wait(timeout=30)
        queued = wait_for(
            lambda: second.queue.next(second_id, block_ms=100, claim_idle_ms=claim_ms),
            30,
            "the second trainer to take the request over",
        )
        assert queued.request_id == request_id
        assert not queue.renew_claim(request_id, first_id)  # no taking it back
        outcome = second.handle(queued)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
        log_file.close()

    assert len(trained) == 1  # taken over, and run once
    assert outcome is not None and outcome.trainer == second_id
    assert outcome.status == "failed" and "StopsHere" in outcome.detail
    assert queue.pending() == []  # acknowledged
    assert second.queue.next(second_id, block_ms=100, claim_idle_ms=claim_ms) is None
