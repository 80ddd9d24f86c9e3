"""A line calibrates itself on the REAL local stack, and only through the gate.

A real worker judges a line's parts and counts their scores into Redis; an
operator's findings on the flagged ones are recorded as the console records
them (`PlantPlanes`); the proposal read off those counts is requested as a
release, which a trainer gates and releases without training; the worker swaps
to it and judges the line by its own threshold, and the new release's counts
continue its parent's. Exact by construction: the proposal is computed from
the same counts the trainer reads, nothing else judges on the line meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from console.plant_clients import PlantPlanes
from operations.line_calibration import EVIDENCE_VERSIONS, line_proposal, read_evidence
from operations.plant import Plant
from operations.releases import publish
from operations.retrain_queue import RetrainQueue
from planes.control import ControlPlane
from planes.storage import ObjectStore
from tests.integration.frames import produce_frames
from tests.integration.pipeline import collect_outcomes
from tests.integration.releases import run_id, start_worker, wait_for
from tests.integration.test_retrain_stack import (
    PRODUCTS,
    _model,
    _seed_normals,
    _trainer_settings,
)
from tests.integration.test_worker_pipeline import create_topics, run_settings
from trainer.learning.synthetic_dataset import generate
from trainer.service.retrain import RetrainService

TARGET = 0.05  # 19 normals can promise it; the test's line judges 44 parts


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    """The retrain tests' tiny products (`test_retrain_stack`), made once for this module."""
    return generate(
        tmp_path_factory.mktemp("calibrationline"),
        products=PRODUCTS,
        size=64,
        train=16,
        test_good=6,
        test_per_defect=2,
        seed=1,
    )


def test_a_line_calibrates_itself_and_the_release_goes_through_the_gate(
    local_stack, line, tmp_path
):
    run = run_id("t")
    renamed = tmp_path / "line"
    for p in PRODUCTS:
        (renamed / f"{run}{p}").mkdir(parents=True)
        for sub in ("train", "test", "ground_truth"):
            (renamed / f"{run}{p}" / sub).symlink_to(line / p / sub)
    settings = _trainer_settings(local_stack, run, tmp_path, renamed, evidence_min_normals=20)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    base = publish(store, control, _model(renamed, tmp_path, f"{run}-base", epochs=2))
    _seed_normals(store, line, run)  # the product's held-out normals, for the gate
    product = f"{run}washer"
    frames_line = f"{run}-l1"
    topic = f"kenpin.frames.{frames_line}"
    create_topics(local_stack, [topic], partitions=1)
    worker = start_worker(
        run_settings(
            local_stack,
            tmp_path / f"{run}-base",
            run,
            control_prefix=f"{run}:",
            releases_dir=tmp_path / "releases",
            release_check_interval_s=1.0,
            live_scores_flush_s=0.3,
        ),
        tmp_path / f"{run}-base",
        live_scores=True,
    )
    planes = PlantPlanes(
        Plant(control, store, RetrainQueue(control)), evidence_min_normals=20, evidence_ttl_s=600
    )
    try:
        images = [(path, product) for path in sorted((line / "washer").glob("*/good/*.png"))]
        images = images * 2
        producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap, acks="all")
        produce_frames(producer, topic, frames_line, images, bad=False)
        producer.flush()
        verdicts, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{frames_line}"], expected=len(images), timeout_s=90
        )
        assert len(verdicts) == len(images) == 44
        counted = wait_for(
            lambda: (e := read_evidence(control, base, frames_line, product)).judged == 44 and e,
            30,
            "the worker's counts in Redis",
        )
        flagged = [v for v in verdicts if v.result == "ng"]
        assert int(counted.ng.sum()) == len(flagged)
        for verdict in flagged:  # the operator found every flagged part fine
            planes.record_finding(verdict, "fine", "operator@console")

        proposal = line_proposal(control, base, frames_line, product, TARGET, 20)
        assert proposal.ok, proposal.refusals
        assert proposal.normals == 44 and proposal.today_flagged == len(flagged)
        assert [(p.line, p.product) for p in planes.line_proposals(TARGET)] == [
            (frames_line, product)
        ]

        request_id = planes.request_line_threshold(frames_line, product, TARGET, "operator@console")
        service = RetrainService(settings, control, store)
        queued = service.queue.next(settings.trainer_id, block_ms=1000, claim_idle_ms=60_000)
        assert queued is not None and queued.request_id == request_id
        started = time.perf_counter()
        outcome = service.handle(queued)
        print(
            f"\nline threshold: {outcome.status} in {time.perf_counter() - started:.1f} s: "
            f"{outcome.detail}; stages {outcome.stages}"
        )
        assert outcome.status == "released", (outcome.detail, outcome.gate)
        assert "train" not in outcome.stages  # nothing trained
        released = control.current()
        assert released.version == outcome.version and released.parent_version == base.version
        assert released.files == base.files  # the same weights, byte for byte
        entry = released.line_thresholds[frames_line][product]
        assert entry.threshold == proposal.threshold
        assert entry.expected_false_alarm_rate == proposal.expected_false_alarm_rate
        assert released.products == base.products  # other lines keep the product's threshold
        assert released.data[EVIDENCE_VERSIONS] == [base.version]
        measured = outcome.gate.candidate.products[product]
        assert measured.threshold == proposal.threshold and measured.normals > 0

        wait_for(lambda: worker.hot_swap.active_version == released.version, 60, "the swap")
        one = [(line / "washer" / "test" / "good" / "000.png", product)]
        # one more part, after the swap
        produce_frames(producer, topic, frames_line, one, bad=False)
        producer.flush()
        producer.close()
        after, _ = collect_outcomes(
            local_stack, [f"kenpin.verdicts.{frames_line}"], expected=45, timeout_s=60
        )
        last = [v for v in after if v.model_version == released.version]
        assert len(last) == 1 and last[0].threshold == entry.threshold
        # the new release's counts continue the parent's: 45 parts judged by the same weights
        wait_for(
            lambda: read_evidence(control, released, frames_line, product).judged == 45,
            30,
            "the counts to continue",
        )
    finally:
        worker.stop()


def test_a_stale_line_threshold_request_is_refused(local_stack, line, tmp_path):
    """Proposed under one release, run after another became current: refused, nothing released."""
    run = run_id("s")
    renamed = tmp_path / "line"
    for p in PRODUCTS:
        (renamed / f"{run}{p}").mkdir(parents=True)
        for sub in ("train", "test", "ground_truth"):
            (renamed / f"{run}{p}" / sub).symlink_to(line / p / sub)
    settings = _trainer_settings(local_stack, run, tmp_path, renamed)
    store = ObjectStore.from_settings(settings)
    control = ControlPlane.from_url(settings.redis_url, settings.control_prefix)
    first = publish(store, control, _model(renamed, tmp_path, f"{run}-a", epochs=0))
    planes = PlantPlanes(Plant(control, store, RetrainQueue(control)))
    request_id = planes.request_line_threshold(f"{run}-l1", f"{run}washer", 0.01, "op")
    second = publish(store, control, _model(renamed, tmp_path, f"{run}-b", epochs=0))
    service = RetrainService(settings, control, store)
    queued = service.queue.next(settings.trainer_id, block_ms=1000, claim_idle_ms=60_000)
    assert queued is not None and queued.request_id == request_id
    outcome = service.handle(queued)
    assert outcome.status == "refused"
    assert f"not {first.version} whose counts were shown" in outcome.detail
    assert control.current().version == second.version
