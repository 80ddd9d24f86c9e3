"""The latency budget's arithmetic: each stage from the stamps a part collected on its way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deploy.benchmarks.latency_budget import STAGES, TOTALS, Part, summarise
from schemas.verdicts import Verdict, WorkerStages

CAPTURED = datetime(2026, 1, 1, tzinfo=UTC)
T0 = CAPTURED.timestamp() * 1000


def judged_part(polled=10.0, judging=12.0, judged=40.0, produced=41.0, notified=70.0) -> Part:
    verdict = Verdict(
        frame_id="f1",
        line="l1",
        camera="cam-1",
        product="bottle",
        result="ok",
        score=0.1,
        threshold=1.0,
        model_version="v1",
        capture_time=CAPTURED,
        decision_time=CAPTURED + timedelta(milliseconds=judged + 0.5),
        latency_ms=judged + 0.5,
    )
    part = Part(T0, verdict, WorkerStages(polled=T0 + polled, judging=T0 + judging,
                                          judged=T0 + judged), T0 + produced)  # fmt: skip
    part.outcomes[1] = ("OK", T0 + notified)
    return part


def test_each_stage_is_the_gap_between_its_stamps():
    times = judged_part().times()
    assert [round(times[s], 3) for s in STAGES] == [10.0, 2.0, 28.0, 1.0, 29.0]
    assert times[TOTALS[0]] == pytest.approx(40.5)
    assert times[TOTALS[1]] == pytest.approx(70.0)
    assert sum(times[s] for s in STAGES) == pytest.approx(times[TOTALS[1]])  # nothing unseen


def test_a_part_without_its_ok_or_ng_at_the_plc_counts_in_the_worker_stages_only():
    timed_out = judged_part(judged=600.0)
    timed_out.outcomes = {1: ("TIMEOUT", T0 + 500)}
    assert STAGES[4] not in timed_out.times() and TOTALS[1] not in timed_out.times()
    table = summarise([judged_part(notified=70.0), timed_out, judged_part(notified=90.0)])
    assert table[TOTALS[1]]["parts"] == 2 and table[TOTALS[1]]["max"] == pytest.approx(90.0)
    assert table[TOTALS[0]]["parts"] == 3 and table[TOTALS[0]]["max"] == pytest.approx(600.5)
