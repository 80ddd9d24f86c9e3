"""Retraining on the REAL local stack: the gate refuses a worse candidate; end to end release.

(c) A candidate trained for 0 epochs is measured against a trained current
    release on the same held-out normals and labelled anomalies, and refused.
(d) import-normals -> `kenpin-trainer retrain` -> the service trains, gates and
    releases -> a running worker swaps and judges with the new release; the time
    of each stage is printed.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.integration.frames import produce_frames
from tests.integration.releases import run_id, start_worker, wait_for
from tests.integration.test_worker_pipeline import collect_outcomes, create_topics, run_settings
from trainer.cli import main as trainer_cli
from trainer.control import RetrainQueue
from trainer.export import export
from trainer.normal_store import import_folder
from trainer.releases import publish
from trainer.service import RetrainService
from trainer.settings import TrainerSettings
from trainer.synthetic import generate
from trainer.train import TrainConfig, train
from worker.control import ControlPlane
from worker.storage import ObjectStore

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


def _model(root: Path, out: Path, version: str, epochs: int) -> Path:
    result = train(root, TrainConfig(image_size=64, epochs=epochs, batch_size=8), progress=False)
    export(result, out / version, version=version)
    return out / version


def _trainer_settings(stack, run: str, tmp_path: Path, anomalies: Path, **overrides):
    values = dict(
        redis_url=stack.env["KENPIN_REDIS_URL"],
        control_prefix=f"{run}:",
        s3_endpoint=stack.s3_endpoint,
        s3_access_key=stack.s3_access_key,
        s3_secret_key=stack.s3_secret_key,
        s3_bucket=stack.env["KENPIN_S3_BUCKET"],
        anomalies_dir=anomalies,
        work_dir=tmp_path / "runs",
        image_size=64,
        batch_size=8,
        epochs=3,
        progress=False,
        trainer_id=f"{run}-trainer",
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


def test_a_worse_candidate_is_refused_by_the_gate(local_stack, line, tmp_path):
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
    current = publish(store, control, _model(renamed, tmp_path, f"{run}-good", epochs=3))
    _seed_normals(store, line, run)

    service = RetrainService(settings, control, store)
    request_id = service.queue.request("0 epochs on purpose", "test")
    queued = service.queue.next(settings.trainer_id, block_ms=1000, claim_idle_ms=60_000)
    assert queued is not None and queued.request_id == request_id
    outcome = service.handle(queued)

    print(f"\ngate: {outcome.status}: {outcome.detail}; stages {outcome.stages}")
    assert outcome.status == "refused", outcome.detail
    assert "false alarms" in outcome.detail or "AUROC" in outcome.detail
    assert RetrainQueue(control).outcome(request_id).status == "refused"
    assert control.current().version == current.version  # nothing released


def test_end_to_end_retrain_release_and_swap(local_stack, line, tmp_path, monkeypatch):
    run = run_id("e")
    timings: dict[str, float] = {}
    renamed = tmp_path / "line"
    for p in PRODUCTS:
        (renamed / f"{run}{p}").mkdir(parents=True)
        for sub in ("train", "test", "ground_truth"):
            (renamed / f"{run}{p}" / sub).symlink_to(line / p / sub)
    settings = _trainer_settings(
        local_stack, run, tmp_path, renamed, max_false_alarm_increase=0.05, max_auroc_drop=0.05
    )
    for key, value in settings.model_dump(mode="json").items():
        if value is not None:
            monkeypatch.setenv(f"KENPIN_{key.upper()}", str(value))
    monkeypatch.setenv("KENPIN_S3_ACCESS_KEY", local_stack.s3_access_key)
    monkeypatch.setenv("KENPIN_S3_SECRET_KEY", local_stack.s3_secret_key)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)

    # the line starts on an untrained bootstrap release, served by a worker
    bootstrap = _model(renamed, tmp_path, f"{run}-bootstrap", epochs=0)
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
        assert control.current().version == outcome.version
        assert control.current().parent_version == f"{run}-bootstrap"
        assert control.current().data["snapshot_id"] == outcome.snapshot_id

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
