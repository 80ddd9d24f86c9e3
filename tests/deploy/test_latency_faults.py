"""The fault report's arithmetic: which parts a fault owns, its TIMEOUTs, lost parts, recovery."""

from __future__ import annotations

from deploy.benchmarks.latency_budget import Part
from deploy.benchmarks.latency_faults import (
    Fault,
    decision,
    fault_report,
    plot_timeline,
    timeline,
)

DEADLINE = 500.0


def part(captured: float, outcome: str | None, second: str | None = None) -> Part:
    p = Part(captured)
    if outcome is not None:
        p.outcomes[1] = (outcome, captured + 100)
    if second is not None:
        p.outcomes[2] = (second, captured + 900)
    return p


def test_the_first_outcome_is_the_decision_and_none_means_lost():
    assert decision(part(0, "TIMEOUT", "NG")) == "TIMEOUT"
    assert decision(part(0, None)) is None


def test_each_fault_owns_the_parts_from_one_deadline_before_it_to_the_next_one():
    outage = Fault("broker outage", began=10_000, ended=15_000)
    kill = Fault("worker killed", began=30_000, ended=33_000)
    parts = [
        part(9_000, "OK"),  # before either span
        part(9_700, "TIMEOUT"),  # still waiting when the broker went: the outage's
        part(14_000, "TIMEOUT"),
        part(16_000, "TIMEOUT"),  # captured 1 s after the broker answered
        part(17_000, "OK", "OK"),
        part(29_600, None),  # the kill's span (one deadline before it)
        part(31_000, "TIMEOUT"),
    ]
    first, second = fault_report(parts, [kill, outage], DEADLINE)
    assert first["fault"] == "broker outage" and second["fault"] == "worker killed"
    counts = ("parts", "timeout", "lost", "second_outcomes")
    assert [first[k] for k in counts] == [4, 3, 0, 1]
    assert first["fault_s"] == 5.0 and first["last_timeout_after_end_s"] == 1.0
    assert [second[k] for k in counts] == [2, 1, 1, 0]
    assert second["last_timeout_after_end_s"] == -2.0  # captured while nothing judged


def test_the_timeline_buckets_parts_by_capture_time_from_the_first():
    parts = [part(1_000, "OK"), part(3_000, "TIMEOUT"), part(7_000, None), part(12_000, "OK")]
    rows = timeline(parts, bucket_ms=5_000)
    assert [(r["from_s"], r["parts"], r["timeout"], r["no_outcome"]) for r in rows] == [
        (0.0, 2, 1, 0),
        (5.0, 1, 0, 1),
        (10.0, 1, 0, 0),
    ]
    assert all(r["decision_p50_ms"] is None for r in rows)  # no verdicts were tapped here


def test_the_fault_timeline_is_drawn(tmp_path):
    outage = Fault("broker outage", began=10_000, ended=15_000)
    path = tmp_path / "latency_faults.png"
    plot_timeline([part(9_000, "OK"), part(12_000, "TIMEOUT")], [outage], DEADLINE, path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
