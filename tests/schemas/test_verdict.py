"""Verdict JSON: what the sorting PLC reads, and the rules that keep it unambiguous."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict

CAPTURE = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
FRAME = FrameHeaders(
    frame_id="f-1",
    line="l1",
    camera="cam-1",
    product="bottle",
    capture_time=CAPTURE,
    content_type="image/jpeg",
)


def test_for_frame_copies_the_frame_and_computes_latency():
    verdict = Verdict.for_frame(
        FRAME,
        result="ng",
        score=0.91,
        threshold=0.5,
        model_version="2024-05-01.1",
        heatmap_key="heatmaps/l1/2024-05-01/f-1.png",
        decision_time=CAPTURE + timedelta(milliseconds=42),
    )
    assert (verdict.frame_id, verdict.line, verdict.camera, verdict.product) == (
        "f-1",
        "l1",
        "cam-1",
        "bottle",
    )
    assert verdict.latency_ms == pytest.approx(42.0)
    assert verdict.schema_version == 2
    assert (verdict.part_id, verdict.sequence) == (None, None)


def test_json_round_trip_and_wire_format():
    verdict = Verdict.for_frame(
        FRAME, result="ok", score=0.1, threshold=0.5, model_version="v1", decision_time=CAPTURE
    )
    data = verdict.to_json()
    assert isinstance(data, bytes)
    wire = json.loads(data)
    assert wire["result"] == "ok"
    assert wire["heatmap_key"] is None
    assert wire["capture_time"] == "2024-05-01T08:00:00Z"
    assert Verdict.from_json(data) == verdict
    assert Verdict.from_json(data.decode()) == verdict


def test_ok_verdicts_have_no_heatmap():
    with pytest.raises(ValidationError, match="heatmap_key"):
        Verdict.for_frame(
            FRAME, result="ok", score=0.1, threshold=0.5, model_version="v1", heatmap_key="k"
        )


@pytest.mark.parametrize("score", [float("nan"), float("inf")])
def test_scores_must_be_finite(score):
    with pytest.raises(ValidationError):
        Verdict.for_frame(FRAME, result="ng", score=score, threshold=0.5, model_version="v1")


def test_result_is_ok_or_ng_only():
    with pytest.raises(ValidationError):
        Verdict.for_frame(FRAME, result="bad", score=1.0, threshold=0.5, model_version="v1")


def test_unknown_fields_are_rejected():
    wire = json.loads(
        Verdict.for_frame(
            FRAME, result="ok", score=0.1, threshold=0.5, model_version="v1"
        ).to_json()
    )
    with pytest.raises(ValidationError):
        Verdict.model_validate(wire | {"extra": 1})
