"""Every judged score is counted for the line's own threshold, and none is lost to a Redis blip."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from model.network import StudentTeacher
from model.runtime import InspectionModel
from schemas.live_scores import TOP_BIN, bin_field, score_bin
from schemas.manifest import ModelManifest, Normalisation, ProductThreshold
from schemas.verdicts import Verdict
from tests.worker.test_worker_loop import FakeConsumer, FakeProducer, frame, make_worker
from worker.live_scores import LiveScores


class CountingControl:
    """The one control-plane call LiveScores makes; `down` makes it fail like an outage."""

    def __init__(self) -> None:
        self.added: list[dict] = []
        self.down = False

    def add_scores(self, counts, ttl_s) -> None:
        if self.down:
            raise ConnectionError("Redis is away")
        self.added.append({key: dict(fields) for key, fields in counts.items()})


def test_counts_are_binned_under_the_threshold_and_added_in_one_flush():
    control = CountingControl()
    scores = LiveScores(control)
    scores.count("v1", "l1", "tile", 0.5, 1.0, ng=False)
    scores.count("v1", "l1", "tile", 0.5004, 1.0, ng=False)
    scores.count("v1", "l1", "tile", 7.0, 1.0, ng=True)
    assert scores.pending() == 3
    assert scores.flush()
    assert control.added == [{("v1", "l1", "tile"): {"ok:500": 2, f"ng:{TOP_BIN}": 1}}]
    assert scores.pending() == 0


def test_a_redis_outage_keeps_the_counts_for_the_next_flush():
    control = CountingControl()
    scores = LiveScores(control)
    scores.count("v1", "l1", "tile", 0.25, 1.0, ng=False)
    control.down = True
    assert not scores.flush()
    scores.count("v1", "l1", "tile", 0.25, 1.0, ng=False)
    assert scores.pending() == 2 and scores.metrics.live_scores_pending._value.get() == 1
    control.down = False
    assert scores.flush()
    assert control.added == [{("v1", "l1", "tile"): {"ok:250": 2}}]


def test_stop_adds_what_is_left():
    control = CountingControl()
    scores = LiveScores(control, flush_s=60).start()
    scores.count("v1", "l2", "bottle", 0.1, 1.0, ng=False)
    scores.stop()
    assert control.added == [{("v1", "l2", "bottle"): {"ok:100": 1}}]


@pytest.mark.parametrize(
    ("score", "index"), [(-1.0, 0), (0.0, 0), (0.9999, 999), (1.0, 1000), (1e9, TOP_BIN)]
)
def test_score_bins(score, index):
    assert score_bin(score, 1.0) == index


def test_the_worker_judges_by_the_lines_threshold_and_counts_under_the_products():
    manifest = ModelManifest(
        version="unit-lines",
        created=datetime.now(UTC),
        backbone="efficientnet_lite0",
        image_size=32,
        normalisation=Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3),
        sha256="0" * 64,
        products={"bottle": ProductThreshold(threshold=1e-6, rule="all NG", normal_scores=1)},
        line_thresholds={
            "l1": {"bottle": ProductThreshold(threshold=1e9, rule="all OK", normal_scores=1)}
        },
    )
    model = InspectionModel(StudentTeacher("efficientnet_lite0"), manifest, device="cpu")
    producer = FakeProducer()
    worker = make_worker(model, FakeConsumer([[frame(0), frame(1)]]), producer)
    control = CountingControl()
    worker.live_scores = LiveScores(control)
    worker.step()
    worker.step()
    verdicts = [Verdict.from_json(v) for t, v in producer.sent if t == "kenpin.verdicts.l1"]
    assert [(v.result, v.threshold) for v in verdicts] == [("ok", 1e9), ("ok", 1e9)]
    worker.live_scores.flush()
    assert control.added == [{("unit-lines", "l1", "bottle"): {bin_field("ok", TOP_BIN): 2}}]


def test_a_line_threshold_for_an_unknown_product_is_refused():
    with pytest.raises(ValueError, match="unknown products"):
        ModelManifest(
            version="bad",
            created=datetime.now(UTC),
            image_size=32,
            sha256="0" * 64,
            products={"bottle": ProductThreshold(threshold=1.0, rule="r", normal_scores=1)},
            line_thresholds={
                "l1": {"tile": ProductThreshold(threshold=1.0, rule="r", normal_scores=1)}
            },
        )
