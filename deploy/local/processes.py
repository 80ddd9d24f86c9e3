"""Free ports, detached server processes, and stopping them again.

``up`` and ``down`` may run in different Python processes, so a server is
identified by what the state file records (pid and start time), not by a
``Popen`` object. Every server gets its own session (``start_new_session``) so
it survives the shell or test process that started it and can be signalled as
a process group.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

__all__ = [
    "ServerProcess",
    "free_port",
    "free_port_pair",
    "is_alive",
    "spawn",
    "stop",
    "tail",
]

LOOPBACK = "127.0.0.1"


def _bindable(port: int) -> bool:
    """True if nothing listens on *port* of the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """A port the kernel considers free; it may be taken before the server binds it.

    The race is accepted: the server then fails to start and the readiness
    check reports it with the server's log.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def free_port_pair(offset: int, exclude: set[int], low: int = 20000, high: int = 30000) -> int:
    """A free port *p* such that *p + offset* is free too.

    SeaweedFS derives each gRPC port as the HTTP port + 10000 in places where it
    cannot be told otherwise, so both must be free. Ports are drawn from
    ``[low, high)`` so that ``p + offset`` stays below 65536 and mostly below the
    kernel's ephemeral range (32768+ on Linux), where client sockets live.
    """
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(low, high)
        pair = {port, port + offset}
        if pair & exclude:
            continue
        if _bindable(port) and _bindable(port + offset):
            exclude.update(pair)
            return port
    raise RuntimeError(f"no free port pair (p, p+{offset}) found in [{low}, {high})")


@dataclass(frozen=True)
class ServerProcess:
    """What is needed to find a detached server again from another process."""

    name: str
    pid: int
    executable: str
    log: str
    started: float | None = None  # seconds after boot; None in older state files

    def to_json(self) -> dict[str, object]:
        """A JSON-able form for the state file."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ServerProcess:
        """Inverse of :meth:`to_json`."""
        started = data.get("started")
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            executable=str(data["executable"]),
            log=str(data["log"]),
            started=None if started is None else float(str(started)),
        )


def _since_boot(proc: psutil.Process) -> float:
    """When *proc* started, in seconds after boot: unlike ``create_time()`` (wall
    clock), not moved by clock changes between ``up`` and a later ``down``."""
    return proc.create_time() - psutil.boot_time()


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start *argv* detached, its stdout and stderr appended to *log*."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never by a shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    # The Popen object is dropped on purpose: the server must outlive this
    # process. Mark it as already waited-for so that its finaliser does not warn.
    proc.returncode = 0
    started = round(_since_boot(psutil.Process(proc.pid)), 2)
    return ServerProcess(name, proc.pid, str(argv[0]), str(log), started)


def _exited(proc: psutil.Process) -> bool:
    """True once *proc* has exited; a zombie counts, and is reaped if it is our child."""
    try:
        if not proc.is_running():  # gone, or its pid now belongs to another process
            return True
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        proc.wait(timeout=0)
    except psutil.Error:  # gone meanwhile, or (TimeoutExpired) a zombie its parent reaps
        pass
    return True


def _process(server: ServerProcess) -> psutil.Process | None:
    """The recorded server's process while it runs; None once it exited or its pid was reused."""
    try:
        proc = psutil.Process(server.pid)
        if server.started is not None:
            # Not exact: boot_time() is whole seconds and may tick over between reads.
            same = abs(_since_boot(proc) - server.started) < 1.5
        else:  # no start time recorded: compare the executable (Redis rewrites its argv)
            same = proc.exe() == os.path.realpath(server.executable)
    except psutil.Error:  # gone, a zombie (exe) or not ours to inspect
        return None
    return proc if same and not _exited(proc) else None


def is_alive(server: ServerProcess) -> bool:
    """True while the recorded server still runs (zombies count as dead)."""
    return _process(server) is not None


def _signal_group(proc: psutil.Process, sig: signal.Signals) -> None:
    """Signal the server's process group (it leads its own session), else the pid."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _wait_exited(proc: psutil.Process, timeout_s: float) -> bool:
    """Poll until *proc* has exited; False if it still runs after *timeout_s*.

    Not ``psutil.wait_procs``: it waits for the reaping, and servers left by
    ``kenpin-stack up`` are reaped by init, seconds later or (some containers) never.
    """
    deadline = time.monotonic() + timeout_s
    while not _exited(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(server: ServerProcess, grace_s: float) -> bool:
    """SIGTERM the server's process group, SIGKILL after *grace_s* (at once if 0).

    Returns True if it had to be killed.
    """
    proc = _process(server)
    if proc is None:
        return False
    if grace_s > 0:
        _signal_group(proc, signal.SIGTERM)
        if _wait_exited(proc, grace_s):
            return False
    _signal_group(proc, signal.SIGKILL)
    _wait_exited(proc, 5.0)
    return True


def tail(path: str | Path, lines: int = 30) -> str:
    """The last *lines* of a log, for error messages that say why a server failed."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])
