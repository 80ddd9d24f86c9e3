"""A retrain's status while Redis does not answer: the page says "try again", its stream waits.

Before, the status page raised UnboundLocalError (a 500) when the planes raised;
now it is a 503 page saying to try again, and its event stream goes on polling
until the status comes back, then ends as usual at a final status.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from console.pages import retrain
from console.plant import PlaneUnavailable
from schemas.control import RetrainOutcome
from schemas.gate import GateReport, ModelMeasure, ProductMeasure


class Flaky:
    """`planes.retrain` that fails `times` times, then answers `outcome`."""

    def __init__(self, times: int, outcome: RetrainOutcome | None) -> None:
        self.left = times
        self.outcome = outcome
        self.calls = 0

    def __call__(self, request_id: str) -> RetrainOutcome | None:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise PlaneUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return self.outcome


def status_events(response) -> list[dict]:
    """The `status` events of a finished event stream, decoded."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name == "status":
            events.append(json.loads(line.removeprefix("data: ")))
    return events


def test_the_status_page_says_try_again_while_redis_is_down(console):
    console.login()
    console.planes.retrain = Flaky(times=1, outcome=None)
    page = console.client.get("/retrain/1-0")
    assert page.status_code == 503
    assert "Retrain status: Redis or S3 did not answer; try again." in page.text
    assert 'data-status-events="/retrain/1-0/events"' in page.text  # the page keeps trying


def test_the_status_stream_keeps_trying_until_redis_answers(console, monkeypatch):
    monkeypatch.setattr(retrain, "STATUS_POLL_S", 0.01)
    released = RetrainOutcome(
        request_id="1-0", status="released", version="v3", updated=datetime.now(UTC)
    )
    console.planes.retrain = flaky = Flaky(times=3, outcome=released)
    console.login()
    with console.client.stream("GET", "/retrain/1-0/events") as response:
        assert response.status_code == 200
        events = status_events(response)
    assert flaky.calls == 4  # three outages polled through, then the answer
    # the outage is shown once (it did not change), then the final status ends the stream
    assert len(events) == 2
    assert "did not answer; try again" in events[0]["html"] and events[0]["final"] is False
    assert "released" in events[1]["html"] and events[1]["final"] is True


def test_an_outage_does_not_leak_between_two_apps_in_one_process():
    from tests.console.conftest import Console

    down, up = Console(), Console()
    down.planes.retrain = Flaky(times=10, outcome=None)
    for console in (down, up):
        console.login()
    request_id = up.client.post(
        "/retrain", data={"reason": "new supplier", "csrf_token": up.token()}
    ).headers["location"]
    assert down.client.get(request_id).status_code == 503
    assert up.client.get(request_id).status_code == 200


@pytest.mark.parametrize("path", ["/retrain/1-0", "/retrain/1-0/events"])
def test_an_anonymous_visitor_reads_nothing_even_during_an_outage(path):
    from tests.console.conftest import Console

    closed = Console()
    closed.planes.retrain = Flaky(times=10, outcome=None)
    assert closed.client.get(path).status_code in (303, 403)
    assert closed.planes.retrain.calls == 0


def test_a_finished_retrain_shows_its_typed_gate_report(console):
    """The outcome's GateReport is shown field by field, its reasons first among them."""
    measured = ModelMeasure(
        version="c1",
        products={
            "bottle": ProductMeasure(
                threshold=0.5, normals=20, false_alarms=1, false_alarm_rate=0.05
            )
        },
        false_alarm_rate=0.05,
    )
    report = GateReport(released=False, reasons=["too many alarms"], candidate=measured)
    console.login()
    console.planes.outcomes["7-0"] = RetrainOutcome(
        request_id="7-0", status="refused", gate=report, updated=datetime.now(UTC)
    )
    page = console.client.get("/retrain/7-0")
    assert page.status_code == 200
    assert "too many alarms" in page.text and "false_alarm_rate" in page.text
    assert "max_false_alarm_increase" in page.text  # the policy it was judged against
