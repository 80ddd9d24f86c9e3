"""Finding and stopping detached server processes, with ``sleep`` as the server."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deploy.local.processes import ServerProcess, is_alive, spawn, stop

REPO = Path(__file__).resolve().parents[2]


def _roundtrip(server: ServerProcess) -> ServerProcess:
    """As ``down`` finds it: through the JSON of the state file."""
    return ServerProcess.from_json(json.loads(json.dumps(server.to_json())))


def _group(pgid: int) -> list[int]:
    """Running members of process group *pgid* (a zombie waiting for init is dead)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def test_stop_with_sigterm_and_the_state_file_round_trip(tmp_path: Path) -> None:
    server = spawn("sleep", ["sleep", "60"], tmp_path / "sleep.log")
    assert server.started is not None
    assert _roundtrip(server) == server
    assert is_alive(_roundtrip(server))
    assert stop(_roundtrip(server), grace_s=3.0) is False  # exited on SIGTERM
    assert not is_alive(server)
    assert not Path(f"/proc/{server.pid}").exists()  # the zombie was reaped


def test_sigkill_to_the_whole_group_after_the_grace_or_at_once(tmp_path: Path) -> None:
    stubborn = ["bash", "-c", "trap '' TERM; sleep 60 & wait"]
    server = spawn("stubborn", stubborn, tmp_path / "stubborn.log")
    time.sleep(0.3)
    assert len(_group(server.pid)) == 2
    started = time.monotonic()
    assert stop(server, grace_s=0.5) is True
    assert time.monotonic() - started < 3
    deadline = time.monotonic() + 2  # SIGKILL takes effect when the child is next scheduled
    while _group(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group(server.pid) == []  # the child sleep died with it

    server = spawn("sleep", ["sleep", "60"], tmp_path / "sleep.log")
    assert stop(server, grace_s=0.0) is True
    assert not is_alive(server)


def test_a_reused_pid_is_neither_alive_nor_signalled(tmp_path: Path) -> None:
    server = spawn("sleep", ["sleep", "60"], tmp_path / "sleep.log")
    try:
        assert server.started is not None
        other = dataclasses.replace(server, started=server.started - 100)
        assert not is_alive(other)
        assert stop(other, grace_s=0.0) is False
        assert is_alive(server)
    finally:
        stop(server, grace_s=1.0)


def test_a_state_file_without_start_times_compares_the_executable(tmp_path: Path) -> None:
    server = spawn("sleep", ["/usr/bin/sleep", "60"], tmp_path / "sleep.log")
    try:
        old = {k: v for k, v in server.to_json().items() if k != "started"}
        assert is_alive(ServerProcess.from_json(old))
        assert not is_alive(ServerProcess.from_json({**old, "executable": "/usr/bin/true"}))
    finally:
        stop(server, grace_s=1.0)


def test_an_exited_server_is_dead(tmp_path: Path) -> None:
    server = spawn("true", ["true"], tmp_path / "true.log")
    time.sleep(0.3)
    assert not is_alive(server)
    assert stop(server, grace_s=1.0) is False


def test_stopping_a_server_another_process_started_does_not_wait_for_init(
    tmp_path: Path,
) -> None:
    """As ``kenpin-stack down`` does: the server is an orphan, reaped by init later."""
    code = (
        "import json, sys; from pathlib import Path; from deploy.local.processes import spawn;"
        "print(json.dumps(spawn('sleep', ['sleep', '60'], Path(sys.argv[1])).to_json()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "sleep.log")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    server = ServerProcess.from_json(json.loads(out))
    assert is_alive(server)
    started = time.monotonic()
    assert stop(server, grace_s=3.0) is False
    assert time.monotonic() - started < 1.0
