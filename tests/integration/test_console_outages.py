"""The console while Redis is down, on real servers: "try again", never a server error.

The console (a TestClient over `create_app`, with the real `PlantPlanes` made as
`kenpin-console` makes them) talks to a Redis of this test's own, so stopping it
cannot disturb the tests sharing the session's stack, whose S3 it uses. With
Redis stopped, a retrain's status page answers 503 saying to try again (it
raised UnboundLocalError before: a 500), the other pages show their panels as
unavailable, a retrain request ends in a notice; the status's event stream keeps
polling through the outage and shows the status once Redis is back.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console.app import create_app
from console.live import VerdictHub
from console.plant_clients import PlantPlanes
from console.settings import ConsoleSettings
from deploy.local.binaries import MissingBinaryError, find_redis_server
from deploy.local.probes import probe_redis
from deploy.local.processes import LOOPBACK, free_port
from operations.retrain_queue import RetrainQueue
from planes.control import ControlPlane
from planes.storage import ObjectStore
from schemas.common import utc_now
from schemas.control import RetrainOutcome
from tests.console.test_console_retrain_outage import status_events
from tests.integration.releases import run_id, wait_for

PASSWORD = "a long operator password"
WAIT_S = 30
TRY_AGAIN = "Redis or S3 did not answer; try again."


class PrivateRedis:
    """A redis-server of one test, on a fixed port so it can be stopped and started again.

    Stopped with SIGTERM, it saves its data set into `directory` and loads it at
    the next start, as a Redis with persistence does after a restart.
    """

    def __init__(self, directory: Path) -> None:
        try:
            self.binary = find_redis_server()
        except MissingBinaryError as exc:
            pytest.skip(f"redis-server not installed: {exc}")
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://:{secrets.token_hex(16)}@{LOOPBACK}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        password = self.url.split("@", 1)[0].rsplit(":", 1)[-1]
        argv = [
            str(self.binary),
            "--bind", LOOPBACK, "--port", str(self.port), "--requirepass", password,
            # saved at shutdown, loaded at start: a restart keeps the request's outcome
            "--dir", str(self.directory), "--save", "3600 1", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, WAIT_S, "the private redis-server to answer", every_s=0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=WAIT_S)
        self.process = None

    def _answers(self) -> bool:
        try:
            probe_redis(self.url)()
        except Exception:
            return False
        return True


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _csrf(html: str) -> str:
    marker = 'name="csrf_token" value="'
    assert marker in html, "no CSRF token in the page"
    return html.split(marker, 1)[1].split('"', 1)[0]


def _status_events(client: TestClient, url: str) -> list[dict]:
    """Every `status` event of the stream at `url`, read until the stream ends."""
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        return status_events(response)


def test_a_retrain_status_during_a_redis_outage_says_try_again(local_stack, private_redis):
    run = run_id("o")
    settings = ConsoleSettings(
        password=PASSWORD,
        session_secret="s" * 32,
        trusted_hosts=["testserver"],
        redis_url=private_redis.url,
        redis_password="",
        control_prefix=f"{run}:",
        s3_endpoint=local_stack.s3_endpoint,
        s3_access_key=local_stack.s3_access_key,
        s3_secret_key=local_stack.s3_secret_key,
        s3_bucket=f"console-{run}",
        s3_secure=False,
        kafka_bootstrap=local_stack.kafka_bootstrap,
    )
    ObjectStore.from_settings(settings).ensure_bucket()
    planes = PlantPlanes.connect(settings)  # as kenpin-console connects
    client = TestClient(create_app(settings, planes, VerdictHub()), follow_redirects=False)
    token = _csrf(client.get("/login").text)
    login = {"username": "operator", "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=login).status_code == 303
    token = _csrf(client.get("/retrain").text)

    asked = client.post("/retrain", data={"reason": "new supplier", "csrf_token": token})
    assert asked.status_code == 303
    status_url = asked.headers["location"]
    request_id = status_url.rsplit("/", 1)[1]
    page = client.get(status_url)
    assert page.status_code == 200 and "queued" in page.text

    private_redis.stop()
    page = client.get(status_url)
    assert page.status_code == 503, page.text[:500]
    assert f"Retrain status: {TRY_AGAIN}" in page.text
    assert f'data-status-events="/retrain/{request_id}/events"' in page.text
    listing = client.get("/retrain")
    assert listing.status_code == 200 and "Retrain requests unavailable" in listing.text
    refused = client.post("/retrain", data={"reason": "again", "csrf_token": token})
    assert refused.status_code == 303
    assert f"Not requested: {TRY_AGAIN}" in client.get(refused.headers["location"]).text

    # the page's event stream polls on through the outage, and ends once the status is final
    events: list[dict] = []
    reader = threading.Thread(
        target=lambda: events.extend(_status_events(client, f"{status_url}/events")), daemon=True
    )
    reader.start()
    time.sleep(3)  # a few polls with Redis down
    assert reader.is_alive(), "the status stream ended while Redis was down"
    private_redis.start()  # with what it held: the request is still "queued"
    RetrainQueue(ControlPlane.from_settings(settings), settings.outcome_ttl_s).record(
        RetrainOutcome(request_id=request_id, status="released", version="it-v2", updated=utc_now())
    )
    reader.join(timeout=WAIT_S)
    assert not reader.is_alive(), "the status stream did not end at the final status"
    assert TRY_AGAIN in events[0]["html"] and events[0]["final"] is False
    assert "released" in events[-1]["html"] and events[-1]["final"] is True
    assert client.get(status_url).status_code == 200
