"""The deadline tracker: one outcome per part, TIMEOUT on time, replays and late ones dropped."""

from datetime import UTC, datetime

import pytest

from bridge.deadlines import (
    UINT32_WRAP,
    DeadLetterArrived,
    DeadlineTracker,
    FrameSeen,
    LineState,
    VerdictArrived,
    coordinates,
)
from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders
from schemas.verdicts import Verdict

CAPTURE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DEADLINES = {"a": 0.5, "b": 1.0}


def tracker(capacity: int = 1000) -> DeadlineTracker:
    return DeadlineTracker(DEADLINES.__getitem__, capacity)


def where(offset: int, line: str = "a") -> str:
    return coordinates(f"kenpin.frames.{line}", 0, offset)


def frame(n: int, t: float, line: str = "a") -> FrameSeen:
    return FrameSeen(line, where(n, line), t, frame_id=f"f{n}", part_id=f"P{n}", capture_sequence=n)


def verdict(n: int, t: float, line: str = "a", result: str = "ok") -> VerdictArrived:
    headers = FrameHeaders(
        frame_id=f"f{n}",
        line=line,
        camera="cam-1",
        product="washer",
        capture_time=CAPTURE,
        content_type="image/png",
        part_id=f"P{n}",
        sequence=n,
    )
    v = Verdict.for_frame(
        headers,
        result=result,
        score=0.9 if result == "ng" else 0.1,
        threshold=0.5,
        model_version="m1",
        heatmap_key="heatmaps/x.png" if result == "ng" else None,
    )
    return VerdictArrived(line, v, t)


def dead_letter(offset: int, t: float, frame_id: str | None, part_id: str | None = None):
    letter = DeadLetter.from_record(
        reason=DeadLetterReason.CORRUPT_IMAGE,
        detail="bad",
        topic="kenpin.frames.a",
        partition=0,
        offset=offset,
        key=b"cam-1",
        value=b"x",
        headers=[],
        frame_id=frame_id,
        part_id=part_id,
    )
    return DeadLetterArrived("a", letter, t)


def test_a_verdict_in_time_is_published_once_with_its_part():
    t = tracker()
    assert t.handle(frame(1, 10.0), 10.0) == []
    assert t.next_due() == pytest.approx(10.5)
    [out] = t.handle(verdict(1, 10.2, result="ng"), 10.2)
    assert (out.verdict, out.part_id, out.capture_sequence, out.sequence) == ("NG", "P1", 1, 1)
    assert (out.score, out.threshold, out.model_version) == (0.9, 0.5, "m1")
    assert out.waited_ms == pytest.approx(200.0)
    assert not out.passes
    assert t.next_due() is None
    assert t.expire(11.0) == []
    assert (t.lines["a"].ng, t.lines["a"].timeout) == (1, 0)


def test_no_verdict_by_the_deadline_is_a_timeout_and_a_late_verdict_changes_nothing():
    t = tracker()
    t.handle(frame(1, 10.0), 10.0)
    assert t.expire(10.499) == []
    [out] = t.expire(10.5)
    assert (out.verdict, out.part_id, out.frame_id, out.reason) == (
        "TIMEOUT",
        "P1",
        "f1",
        "deadline",
    )
    assert out.waited_ms == pytest.approx(500.0)
    assert out.deadline_ms == 500.0
    assert t.handle(verdict(1, 10.7), 10.7) == []
    state = t.lines["a"]
    assert (state.sequence, state.timeout, state.ok, state.late) == (1, 1, 0, 1)
    assert state.last is out  # the TIMEOUT keeps its slot


def test_a_replayed_verdict_does_not_advance_the_sequence():
    t = tracker()
    t.handle(frame(1, 0.0), 0.0)
    assert len(t.handle(verdict(1, 0.1), 0.1)) == 1
    assert t.handle(verdict(1, 0.2), 0.2) == []
    assert t.handle(frame(1, 0.3), 0.3) == []  # the frame read again: no new deadline
    assert t.next_due() is None
    assert (t.lines["a"].sequence, t.lines["a"].duplicate, t.lines["a"].ok) == (1, 1, 1)


def test_a_verdict_before_its_frame_is_published_and_the_frame_starts_no_deadline():
    t = tracker()
    [out] = t.handle(verdict(1, 5.0), 5.0)
    assert out.waited_ms is None  # the bridge had not seen the frame
    t.handle(frame(1, 5.01), 5.01)
    assert t.next_due() is None and t.expire(100.0) == []


def test_a_verdict_of_a_part_never_read_is_counted_unseen():
    """A camera that does not announce: its parts get verdicts but no TIMEOUT guarded them."""
    t = tracker()
    t.handle(frame(1, 0.0), 0.0)
    t.handle(verdict(1, 0.1), 0.1)
    assert t.lines["a"].unseen == 0
    t.handle(verdict(2, 0.2), 0.2)
    assert (t.lines["a"].unseen, t.lines["a"].ok) == (1, 2)


def test_each_line_has_its_own_deadline_and_sequence():
    t = tracker()
    t.handle(frame(1, 0.0, "a"), 0.0)
    t.handle(frame(2, 0.0, "b"), 0.0)
    assert [o.line for o in t.expire(0.6)] == ["a"]
    [late_b] = t.expire(1.0)
    assert (late_b.line, late_b.sequence, late_b.deadline_ms) == ("b", 1, 1000.0)
    assert t.lines["a"].sequence == 1


def test_timeouts_come_out_in_deadline_order():
    t = tracker()
    for n in (3, 1, 2):
        t.handle(frame(n, float(n)), float(n))
    assert [o.part_id for o in t.expire(10.0)] == ["P1", "P2", "P3"]
    assert [o.sequence for o in [t.lines["a"].last]] == [3]


def test_a_dead_letter_is_rejected_input_and_ends_the_deadline():
    t = tracker()
    t.handle(frame(4, 0.0), 0.0)
    [out] = t.handle(dead_letter(4, 0.1, "f4", "P4"), 0.1)
    assert (out.verdict, out.reason, out.part_id, out.frame_id) == (
        "REJECTED_INPUT",
        "corrupt_image",
        "P4",
        "f4",
    )
    assert t.expire(5.0) == []
    assert t.lines["a"].rejected == 1


def test_a_frame_without_usable_headers_is_matched_to_its_dead_letter_by_offset():
    t = tracker()
    t.handle(FrameSeen("a", where(7), 0.0, part_id="P7"), 0.0)
    [out] = t.handle(dead_letter(7, 0.1, None), 0.1)
    assert (out.verdict, out.frame_id, out.part_id) == ("REJECTED_INPUT", None, "P7")
    assert t.expire(5.0) == []


def test_a_dead_letter_without_frame_id_finds_a_parsed_frame_by_offset():
    t = tracker()
    t.handle(frame(8, 0.0), 0.0)
    [out] = t.handle(dead_letter(8, 0.1, None), 0.1)
    assert (out.frame_id, out.part_id) == ("f8", "P8")
    assert t.expire(5.0) == []


def test_memory_is_bounded_and_forgets_the_oldest_decisions_first():
    t = tracker(capacity=100)
    for n in range(150):
        t.handle(verdict(n, float(n)), float(n))
    assert t.handle(verdict(149, 200.0), 200.0) == []  # recent: still a replay
    assert len(t.handle(verdict(0, 201.0), 201.0)) == 1  # forgotten: published again


def test_sequence_and_counters_wrap_like_a_plc_udint():
    state = LineState("a", sequence=UINT32_WRAP - 1, ok=UINT32_WRAP - 1)
    assert state.next_sequence() == 1
    state.count("OK")
    assert state.ok == 0
