"""Deadlines from capture times: TIMEOUT at capture + deadline however late the frame is read,
no OK after the deadline, and nothing published for parts from before the bridge started."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bridge.deadlines import DeadLetterArrived, DeadlineTracker, FrameSeen, VerdictArrived
from schemas.deadletters import DeadLetter, DeadLetterReason
from tests.bridge.test_bridge_deadlines import frame as seen_frame
from tests.bridge.test_bridge_deadlines import verdict as seen_verdict

START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


class Clocks:
    """The bridge's wall clock and its monotonic clock, moved together by the test."""

    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.mono - 100.0)

    def at(self, mono: float) -> float:
        self.mono = mono
        return mono


def tracker(clocks: Clocks) -> DeadlineTracker:
    return DeadlineTracker(
        lambda line: 0.5, 1000, wall_clock=clocks.wall, from_capture=True, started=START
    )


def captured(n: int, seconds_after_start: float, seen_at: float) -> FrameSeen:
    return replace(
        seen_frame(n, seen_at), capture_time=START + timedelta(seconds=seconds_after_start)
    )


def verdict_of(n: int, seconds_after_start: float, t: float, result: str = "ok"):
    arrived = seen_verdict(n, t, result=result)
    v = arrived.verdict.model_copy(
        update={"capture_time": START + timedelta(seconds=seconds_after_start)}
    )
    return VerdictArrived(arrived.line, v, t)


def test_a_frame_read_late_is_due_at_capture_plus_the_deadline():
    clocks = Clocks()
    t = tracker(clocks)
    # captured at +10.0 s, read by the bridge 0.3 s later
    t.handle(captured(1, 10.0, clocks.at(110.3)), clocks.mono)
    assert t.next_due() == pytest.approx(110.5)
    assert t.lines["a"].frame_lag_ms == pytest.approx(300.0)
    [out] = t.expire(clocks.at(110.5))
    assert (out.verdict, out.waited_ms) == ("TIMEOUT", pytest.approx(500.0))


def test_a_verdict_after_capture_plus_deadline_is_a_timeout_not_an_ok():
    clocks = Clocks()
    t = tracker(clocks)
    # the frame and its verdict in one poll, 0.7 s after capture: the PLC's deadline is gone
    t.handle(captured(1, 10.0, clocks.at(110.7)), clocks.mono)
    [out] = t.handle(verdict_of(1, 10.0, clocks.mono), clocks.mono)
    assert (out.verdict, out.reason, out.part_id) == ("TIMEOUT", "deadline", "P1")
    state = t.lines["a"]
    assert (state.timeout, state.ok, state.late, state.sequence) == (1, 0, 1, 1)
    # a verdict whose frame the bridge never read: the same
    [unseen] = t.handle(verdict_of(2, 11.0, clocks.at(111.6)), clocks.mono)
    assert unseen.verdict == "TIMEOUT"
    # and one in time is OK, its wait counted from capture
    [ok] = t.handle(verdict_of(3, 11.5, clocks.at(111.8)), clocks.mono)
    assert (ok.verdict, ok.waited_ms) == ("OK", pytest.approx(300.0))


def test_parts_from_before_the_start_get_no_outcome_at_all():
    clocks = Clocks()
    t = tracker(clocks)
    clocks.at(100.2)
    # the broker's last batch handed out again after a restart: captured long before
    assert t.handle(captured(1, -50.0, clocks.mono), clocks.mono) == []
    assert t.handle(verdict_of(1, -50.0, clocks.mono, result="ng"), clocks.mono) == []
    assert t.handle(verdict_of(2, -3.0, clocks.mono), clocks.mono) == []
    letter = DeadLetter.from_record(
        reason=DeadLetterReason.CORRUPT_IMAGE,
        detail="bad",
        topic="kenpin.frames.a",
        partition=0,
        offset=9,
        key=b"cam-1",
        value=b"x",
        headers=[],
        frame_id="f9",
        time=START - timedelta(minutes=17),
    )
    assert t.handle(DeadLetterArrived("a", letter, clocks.mono), clocks.mono) == []
    assert t.next_due() is None and t.expire(clocks.at(200.0)) == []
    state = t.lines["a"]
    assert (state.stale, state.sequence, state.duplicate) == (4, 0, 0)
    # a part captured within one deadline before the start is still decided
    [recent] = t.handle(verdict_of(3, -0.4, clocks.at(100.05)), clocks.mono)
    assert recent.verdict == "OK" and state.sequence == 1


def test_a_capture_time_ahead_of_the_bridge_is_counted_and_the_deadline_starts_when_seen():
    clocks = Clocks()
    t = tracker(clocks)
    t.handle(captured(1, 12.0, clocks.at(110.0)), clocks.mono)  # camera clock 2 s ahead
    assert t.lines["a"].clock_ahead == 1
    assert t.next_due() == pytest.approx(110.5)


def test_without_synchronised_clocks_the_deadline_runs_from_the_frame_seen():
    clocks = Clocks()
    t = DeadlineTracker(lambda line: 0.5, 1000, wall_clock=clocks.wall, started=START)
    t.handle(captured(1, -50.0, clocks.at(110.0)), clocks.mono)  # an old capture time
    assert t.next_due() == pytest.approx(110.5) and t.lines["a"].stale == 0
