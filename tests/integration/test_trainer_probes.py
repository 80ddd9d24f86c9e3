"""`kenpin-trainer serve` as a process: its metrics and probes over HTTP, a run's outcome in them.

A retrain request on an empty normal store fails in its first stage (no product
has enough normals): quick, and it sets the outcome metrics of a finished run (stage
times, recorded for stages that finish, are checked in tests/trainer).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from deploy.local.processes import free_port
from operations.retrain_queue import RetrainQueue
from planes.control import ControlPlane


def test_serve_reports_queue_depth_last_outcome_and_stage_times(local_stack, tmp_path):
    run = f"tp{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KENPIN_")}
    env |= local_stack.env | {
        "KENPIN_CONTROL_PREFIX": f"{run}:",
        "KENPIN_S3_BUCKET": f"empty-{run}",  # no normals: the run fails at its snapshot
        "KENPIN_TRAINER_METRICS_PORT": str(port),
        "KENPIN_WORK_DIR": str(tmp_path / "work"),
        "KENPIN_LOG_FORMAT": "json",
    }
    log = tmp_path / "trainer.log"
    with open(log, "wb") as out:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", "serve"], env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "/readyz 200", log)
        assert get(port, "/livez")[0] == 200
        assert sample(port, "kenpin_trainer_queue_depth") == 0

        control = ControlPlane.from_url(local_stack.redis_url, f"{run}:")
        RetrainQueue(control).request("probe test", "pytest")
        wait_for(
            lambda: sample(port, 'kenpin_trainer_runs_total{outcome="failed"}') == 1,
            90,
            "the run to fail",
            log,
        )
        assert sample(port, 'kenpin_trainer_last_outcome{outcome="failed"}') == 1
        assert sample(port, 'kenpin_trainer_last_outcome{outcome="released"}') == 0
        wait_for(lambda: sample(port, "kenpin_trainer_queue_depth") == 0, 30, "an empty queue", log)
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=60)
    assert trainer.returncode == 0, log.read_text()[-3000:]


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def sample(port: int, series: str) -> float | None:
    _, text = get(port, "/metrics")
    found = re.search(rf"^{re.escape(series)} (\S+)$", text.decode(), re.M)
    return None if found is None else float(found.group(1))


def wait_for(condition, timeout_s: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
