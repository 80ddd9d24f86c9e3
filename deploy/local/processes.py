"""Free ports, detached server processes, and stopping them again.

``up`` and ``down`` may run in different Python processes, so a server is
identified by what the state file records (pid and executable), not by a
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
from dataclasses import dataclass
from pathlib import Path

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

    def to_json(self) -> dict[str, object]:
        """A JSON-able form for the state file."""
        return {"name": self.name, "pid": self.pid, "executable": self.executable, "log": self.log}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ServerProcess:
        """Inverse of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            executable=str(data["executable"]),
            log=str(data["log"]),
        )


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
    return ServerProcess(name=name, pid=proc.pid, executable=str(argv[0]), log=str(log))


def _reap(pid: int) -> None:
    """Collect *pid* if it is our exited child, so it stops looking alive as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (``None`` if gone or not on Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _same_program(server: ServerProcess) -> bool:
    """Guard against pid reuse: the pid must still run the recorded executable.

    Compares the resolved ``/proc/<pid>/exe`` with the resolved executable, not
    the command line: Redis rewrites its argv into a process title.
    """
    proc = Path(f"/proc/{server.pid}")
    if not Path("/proc/self").exists():
        return True  # no /proc (not Linux): trust the pid
    try:
        running = os.path.realpath(proc / "exe")
    except OSError:
        return proc.exists()  # unreadable exe link: trust a pid that exists
    return running.removesuffix(" (deleted)") == os.path.realpath(server.executable)


def is_alive(server: ServerProcess) -> bool:
    """True while the recorded server still runs (zombies count as dead)."""
    _reap(server.pid)
    try:
        os.kill(server.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # the pid belongs to someone else now
    if _proc_state(server.pid) in {"Z", "X"}:
        return False
    return _same_program(server)


def _signal_group(server: ServerProcess, sig: signal.Signals) -> None:
    """Signal the server's process group (it leads its own session), else the pid."""
    try:
        os.killpg(server.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(server.pid, sig)


def stop(server: ServerProcess, grace_s: float) -> bool:
    """SIGTERM, then SIGKILL after *grace_s*; returns True if it had to be killed."""
    if not is_alive(server):
        return False
    _signal_group(server, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(server):
            return False
        time.sleep(0.1)
    _signal_group(server, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and is_alive(server):
        time.sleep(0.05)
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
