"""The thresholds page shows a line's evidence and proposal; findings are recorded from the
gallery; applying a proposal only asks for a gated release."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from operations.line_calibration import LineEvidence, propose
from schemas.live_scores import TOP_BIN, PartFinding, score_bin


def evidence(ok_scores, defective=()) -> LineEvidence:
    ok = np.zeros(TOP_BIN + 1, np.int64)
    for score in ok_scores:
        ok[score_bin(score, 0.5)] += 1
    findings = tuple(
        PartFinding(
            frame_id=f"bad-{i}",
            line="l1",
            product="washer",
            model_version="v1",
            score=score,
            threshold=0.5,
            finding="defective",
            who="op",
            when=datetime.now(UTC),
        )
        for i, score in enumerate(defective)
    )
    ng = np.zeros(TOP_BIN + 1, np.int64)
    for finding in findings:
        ng[score_bin(finding.score, 0.5)] += 1
    return LineEvidence("l1", "washer", ("v1",), 0.5, ok, ng, findings)


def test_the_page_shows_the_histogram_both_thresholds_and_the_rates(console):
    scores = np.random.default_rng(1).uniform(0.05, 0.45, 600)
    console.planes.proposals = [propose(evidence(scores), 0.5, 0.01, 300)]
    console.login()
    console.client.post("/logout", data={"csrf_token": console.token()})
    assert console.client.get("/calibration").status_code == 303  # to the login page
    console.login()
    page = console.client.get("/calibration")
    assert page.status_code == 200
    assert 'class="today"' in page.text and 'class="proposed"' in page.text
    assert page.text.count('class="bar"') > 10
    assert "600 (600 parts judged; releases v1)" in page.text
    assert "1.00 % expected false alarms" in page.text
    assert "Release this threshold for l1" in page.text


def test_a_proposal_that_would_pass_a_confirmed_defect_cannot_be_applied(console):
    scores = np.random.default_rng(2).uniform(0.05, 0.45, 600)
    console.planes.proposals = [propose(evidence(scores, defective=[0.3]), 0.2, 0.01, 300)]
    console.login()
    page = console.client.get("/calibration?target=1")
    assert "1 would pass (bad-0)" in page.text and 'class="defect"' in page.text
    assert "Release this threshold" not in page.text
    assert ("proposals", 0.01) in console.planes.actions


def test_applying_a_proposal_asks_for_a_release_and_shows_its_status(console):
    console.login()
    answer = console.client.post(
        "/calibration",
        data={"line": "l1", "product": "washer", "target": "2", "csrf_token": console.token()},
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/retrain/")
    assert console.planes.actions[-1] == (
        "line_threshold",
        "l1",
        "washer",
        0.02,
        "operator@console",
    )


def test_a_target_out_of_range_is_refused_and_nothing_asked(console):
    console.login()
    answer = console.client.post(
        "/calibration",
        data={"line": "l1", "product": "washer", "target": "90", "csrf_token": console.token()},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/calibration"
    assert not [a for a in console.planes.actions if a[0] == "line_threshold"]


def test_confirmed_defective_and_found_fine_are_recorded_as_findings(console):
    console.login()
    token = console.token()
    answer = console.client.post(
        "/frames/f-ng/confirm-ng", data={"line": "l1", "csrf_token": token}
    )
    assert answer.status_code == 303
    assert ("finding", "f-ng", "defective", "operator@console") in console.planes.actions
    assert "confirmed defective" in console.client.get("/").text
    console.client.post("/frames/f-ng/mark-good", data={"line": "l1", "csrf_token": token})
    assert ("finding", "f-ng", "fine", "operator@console") in console.planes.actions


def test_only_a_recent_ng_part_can_be_confirmed(console):
    console.login()
    console.client.post(
        "/frames/unknown/confirm-ng", data={"line": "l1", "csrf_token": console.token()}
    )
    assert not [a for a in console.planes.actions if a[0] == "finding"]
