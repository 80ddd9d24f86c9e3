"""Scale-out on Kafka consumer groups, shown: real workers on one line, one killed, one added.

    python -m deploy.benchmarks.scale_out [--frames 600] [--partitions 6] [--model ARTIFACT]

Everything runs on the local stack (Tansu, SeaweedFS, Redis) with real
`kenpin-worker run` processes in one consumer group on one line topic:

1. throughput with 1, 2 and 3 workers: a backlog of frames, drained; frames/s
   from the verdicts' own decision times (start-up and group join not counted);
2. the rebalance scenario: 3 workers, frames streamed at a steady rate; the
   partitions must be balanced (each worker holds partitions / workers, read from
   the workers' own "partitions assigned" log lines); one worker is killed with
   SIGKILL mid-stream and the two others must take its partitions; then a fourth
   worker is added mid-stream and must take partitions. Every frame must be
   judged (lost = 0); duplicates (frames judged again after the kill, which the
   delivery guarantee allows) are counted. The rebalance time after the kill is
   the time from the kill to the first verdict on a partition the killed worker
   held; the pause when a worker joins is the longest stretch without any verdict
   after it asked to join (model loaded), with frames streaming meanwhile.

`run_scenario` is also what tests/integration/test_scale_out.py runs and asserts
on. Without `--model`, a small model is trained first on a procedural line (a
minute on a CPU); with 2 cores shared by every process, the figures say how the
group behaves, not how fast a GPU plant is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition

from planes.settings import settings_env
from schemas.frames import FrameHeaders, content_type_for_path
from schemas.topics import DEADLETTER_TOPIC, frames_topic, frames_topic_pattern, verdict_topic
from schemas.verdicts import Verdict
from worker.settings import WorkerSettings

#: The log events of a worker (see worker/service.py): every assignment it gets, and its
#: model loaded and about to join the group.
ASSIGNED_EVENT = "partitions assigned"
JOINING_EVENT = "line topics found, joining the group"

Image = tuple[Path, str]  # (file, product)


# --- worker processes ------------------------------------------------------------------


def worker_env(
    stack_env: Mapping[str, str], model: Path, run: str, **overrides: object
) -> dict[str, str]:
    """The environment of a worker process of run `run`: its own line pattern and group."""
    values: dict[str, object] = dict(
        frames_topic_pattern=frames_topic_pattern(f"{run}-"),
        consumer_group=f"scale-{run}",
        deadletter_topic=f"{DEADLETTER_TOPIC}.{run}",
        session_timeout_ms=6000,  # Tansu's group join takes about half of it
        rebalance_stall_s=15,  # Tansu sometimes never completes a rebalance (deploy/local)
        metadata_max_age_ms=1000,
        model_path=model.absolute(),
        device="cpu",
        max_batch=8,
        max_wait_ms=50,
        decode_threads=1,
        metrics_port=0,
        hot_swap=False,
        normals_rate=0.0,
        log_format="json",
    )
    values.update(overrides)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KENPIN_")}
    # one thread per process: several workers share the machine, as pods share a node
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return clean | dict(stack_env) | threads | settings_env(values, WorkerSettings)


@dataclass
class WorkerProcess:
    """One `kenpin-worker run` process and its JSON log."""

    name: str
    process: subprocess.Popen
    log: Path
    killed: bool = False

    def assignments(self) -> list[set[str]]:
        """Every assignment this worker logged, oldest first (`topic/partition` names)."""
        return [
            set(e.get("partitions", [])) for e in self.events() if e.get("event") == ASSIGNED_EVENT
        ]

    def holds(self) -> set[str] | None:
        """The partitions of its last assignment; None before the first one."""
        found = self.assignments()
        return found[-1] if found else None

    def first_assigned_at(self) -> datetime | None:
        """When this worker first got partitions (its log's timestamp); None if never."""
        for event in self.events():
            if event.get("event") == ASSIGNED_EVENT and event.get("partitions"):
                return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        return None

    def events(self) -> list[dict]:
        """The JSON events of its log so far (other lines skipped)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def alive(self) -> bool:
        return self.process.poll() is None


class Fleet:
    """Worker processes of one consumer group, started, killed and stopped by name."""

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self.env = dict(env)
        self.logs = logs
        self.workers: list[WorkerProcess] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, count: int = 1) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            name = f"w{len(self.workers) + 1}"
            log = self.logs / f"{name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "worker.cli", "run"],
                    env=self.env | {"KENPIN_WORKER_ID": f"{name}-{uuid.uuid4().hex[:6]}"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            worker = WorkerProcess(name, process, log)
            self.workers.append(worker)
            started.append(worker)
        return started

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no revoke, no commit, no goodbye to the group."""
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)
        worker.killed = True

    def stop(self, timeout_s: float = 60) -> None:
        for worker in self.live():
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()

    def balanced(self, partitions: set[str]) -> bool:
        """The live workers hold every partition once, as evenly as the counts allow."""
        live = self.live()
        held = [w.holds() for w in live]
        if not live or any(h is None for h in held):
            return False
        union = set().union(*held)
        disjoint = sum(len(h) for h in held) == len(union)
        sizes = {len(h) for h in held}
        return union == partitions and disjoint and max(sizes) - min(sizes) <= 1

    def wait_balanced(self, partitions: set[str], timeout_s: float) -> float:
        """Seconds until `balanced`; raises with the workers' log tails if it never is."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.balanced(partitions):
                return time.monotonic() - started
            dead = [w for w in self.workers if not w.killed and not w.alive()]
            if dead:
                raise RuntimeError(f"worker {dead[0].name} exited:\n{_tail(dead[0].log)}")
            time.sleep(0.25)
        held = {w.name: w.holds() for w in self.live()}
        raise TimeoutError(f"partitions not balanced after {timeout_s:.0f} s: {held}")


class _Steps:
    """Seconds since the previous step, by name: where a scenario's time goes."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.last = into, time.monotonic()

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.into[name] = round(now - self.last, 1)
        self.last = now


def _wait_logged(worker: WorkerProcess, event: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(e.get("event") == event for e in worker.events()):
            return
        if not worker.alive():
            raise RuntimeError(f"worker {worker.name} exited:\n{_tail(worker.log)}")
        time.sleep(0.1)
    raise TimeoutError(f"worker {worker.name} never logged {event!r}:\n{_tail(worker.log)}")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- frames in, verdicts out -----------------------------------------------------------


def create_line(bootstrap: str, line: str, partitions: int) -> set[str]:
    """The line's frame topic with `partitions` partitions; returns their `topic/p` names."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(frames_topic(line), partitions, 1)])
    finally:
        admin.close()
    return {f"{frames_topic(line)}/{p}" for p in range(partitions)}


class Camera:
    """Frames of one line, spread over its partitions in turn (one camera per partition)."""

    def __init__(self, bootstrap: str, line: str, partitions: int, images: list[Image]) -> None:
        self.line, self.topic, self.partitions = line, frames_topic(line), partitions
        self.payloads = [(path.read_bytes(), product, path) for path, product in images]
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.sent: dict[str, int] = {}  # frame id -> partition
        self._count = 0

    def send(self, count: int, fps: float = 0.0, stop: threading.Event | None = None) -> None:
        """`count` frames, paced at `fps` (0: as fast as the broker takes them)."""
        started = time.monotonic()
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            if fps > 0:
                delay = started + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            data, product, path = self.payloads[self._count % len(self.payloads)]
            partition = self._count % self.partitions
            headers = FrameHeaders(
                frame_id=uuid.uuid4().hex,
                line=self.line,
                camera=f"cam-{partition}",
                product=product,
                capture_time=datetime.now(UTC),
                content_type=content_type_for_path(path),
            )
            self.producer.send(
                self.topic,
                value=data,
                key=headers.camera.encode(),
                partition=partition,
                headers=headers.to_kafka_headers(),
            )
            self.sent[headers.frame_id] = partition
            self._count += 1
        self.producer.flush(timeout=60)

    def close(self) -> None:
        self.producer.close()


class VerdictLog:
    """Reads the line's verdict topic from its beginning in a thread, until `close`."""

    def __init__(self, bootstrap: str, line: str) -> None:
        self.topic = verdict_topic(line)
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, metadata_max_age_ms=1000
        )
        self.verdicts: list[Verdict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="verdicts", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assigned: set[TopicPartition] = set()
        while not self._stop.is_set():
            partitions = {
                TopicPartition(self.topic, p)
                for p in self.consumer.partitions_for_topic(self.topic) or ()
            }
            if partitions - assigned:  # the workers create the topic with their first verdict
                new = partitions - assigned
                assigned |= partitions
                self.consumer.assign(sorted(assigned))
                self.consumer.seek_to_beginning(*new)
            if not assigned:
                self._stop.wait(0.25)
                continue
            for records in self.consumer.poll(timeout_ms=250).values():
                read = [Verdict.from_json(r.value) for r in records]
                with self._lock:
                    self.verdicts += read

    def snapshot(self) -> list[Verdict]:
        with self._lock:
            return list(self.verdicts)

    def judged(self) -> set[str]:
        return {v.frame_id for v in self.snapshot()}

    def wait_for(self, done: Callable[[list[Verdict]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.snapshot()):
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.consumer.close()


def frames_per_second(verdicts: list[Verdict]) -> float:
    """Verdicts decided after the first one, over the time since it (the first batch's
    frames share one decision time and would inflate the rate)."""
    times = sorted(v.decision_time.timestamp() for v in verdicts)
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0
    return sum(t > times[0] for t in times) / (times[-1] - times[0])


# --- the scenarios ---------------------------------------------------------------------


@dataclass
class ScaleOutReport:
    """What the rebalance scenario saw."""

    sent: int = 0
    verdicts: int = 0
    lost: int = 0
    duplicates: int = 0
    partitions: int = 0
    #: each live worker's partitions: with 3 workers, after the kill, after the join
    balanced_3: dict[str, int] = field(default_factory=dict)
    after_kill: dict[str, int] = field(default_factory=dict)
    after_join: dict[str, int] = field(default_factory=dict)
    killed: str = ""
    killed_partitions: list[str] = field(default_factory=list)
    joined: str = ""
    joined_partitions: list[str] = field(default_factory=list)
    #: kill -> first verdict on a partition the killed worker held
    rebalance_after_kill_s: float = 0.0
    #: longest stretch without any verdict after the new worker asked to join
    pause_on_join_s: float = 0.0
    #: the new worker got its partitions while frames were still being sent
    joined_mid_stream: bool = False
    frames_per_s: float = 0.0
    #: wall-clock seconds of each step of the scenario
    steps_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"scale-out: {self.sent} frames sent on {self.partitions} partitions, "
            f"{self.verdicts} verdicts, lost={self.lost}, duplicates={self.duplicates}; "
            f"3 workers {self.balanced_3}; {self.killed} killed (held "
            f"{sorted(self.killed_partitions)}) -> {self.after_kill}, first verdict on its "
            f"partitions {self.rebalance_after_kill_s:.1f} s after the kill; {self.joined} "
            f"added mid-stream ({self.joined_mid_stream}) -> {self.after_join} (took "
            f"{sorted(self.joined_partitions)}), longest pause without verdicts "
            f"{self.pause_on_join_s:.1f} s; "
            f"{self.frames_per_s:.1f} frames/s overall; steps (s) {self.steps_s}"
        )


def run_scenario(
    bootstrap: str,
    fleet_env: Callable[[str], dict[str, str]],
    images: list[Image],
    logs: Path,
    *,
    frames: int = 600,
    partitions: int = 6,
    fps: float = 20.0,
    timeout_s: float = 120.0,
) -> ScaleOutReport:
    """3 workers, balanced; one killed mid-stream; one added mid-stream; every frame judged.

    `fleet_env(run)` is the workers' environment for a run id (see `worker_env`).
    Frames stream at `fps` in three parts: before the kill, between the kill and
    the join, and from the newcomer's start on (its last frames held until it has
    partitions, so the join always happens while the camera sends).
    """
    run = f"so{uuid.uuid4().hex[:8]}"
    line = f"{run}-l1"
    all_partitions = create_line(bootstrap, line, partitions)
    fleet = Fleet(fleet_env(run), logs)
    camera = Camera(bootstrap, line, partitions, images)
    verdicts = VerdictLog(bootstrap, line)
    report = ScaleOutReport(partitions=partitions)
    third = frames // 3
    clock = _Steps(report.steps_s)
    try:
        fleet.start(3)
        fleet.wait_balanced(all_partitions, timeout_s)
        clock.step("3 workers up and balanced")
        report.balanced_3 = {w.name: len(w.holds() or ()) for w in fleet.live()}

        # part 1, then kill one worker once it has demonstrably judged frames
        camera.send(third, fps)
        victim = fleet.live()[0]
        held = victim.holds() or set()
        mine = {int(p.rsplit("/", 1)[1]) for p in held}
        verdicts.wait_for(
            lambda vs: any(camera.sent.get(v.frame_id) in mine for v in vs), timeout_s
        )
        clock.step("part 1 streamed")
        killed_at = datetime.now(UTC)
        fleet.kill(victim)
        report.killed, report.killed_partitions = victim.name, sorted(held)

        # part 2 streams while the group notices (session timeout) and rebalances
        camera.send(third, fps)
        fleet.wait_balanced(all_partitions, timeout_s)
        report.after_kill = {w.name: len(w.holds() or ()) for w in fleet.live()}
        clock.step("kill to balanced again")

        # part 3: a worker joins mid-stream: the frames start as it asks to join the group
        rest = frames - 2 * third
        (newcomer,) = fleet.start(1)
        _wait_logged(newcomer, JOINING_EVENT, timeout_s)
        clock.step("newcomer started")
        joined_at = datetime.now(UTC)
        tail = min(rest // 4, max(1, int(fps * 2)))

        def stream_across_the_join() -> None:
            # the last frames wait until the newcomer has partitions: whatever the join
            # takes on a loaded machine, it happens while the line is still sending
            camera.send(rest - tail, fps)
            deadline = time.monotonic() + timeout_s
            while newcomer.first_assigned_at() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            camera.send(tail, fps)

        sender = threading.Thread(target=stream_across_the_join, daemon=True)
        sender.start()
        fleet.wait_balanced(all_partitions, timeout_s)
        sender.join(timeout=timeout_s)
        stream_ended = datetime.now(UTC)
        report.after_join = {w.name: len(w.holds() or ()) for w in fleet.live()}
        report.joined, report.joined_partitions = newcomer.name, sorted(newcomer.holds() or ())
        first = newcomer.first_assigned_at()
        report.joined_mid_stream = first is not None and first < stream_ended
        clock.step("part 3 streamed, balanced")

        sent = set(camera.sent)
        verdicts.wait_for(lambda vs: sent <= {v.frame_id for v in vs}, timeout_s)
        time.sleep(1.0)  # replayed verdicts still in flight are counted as duplicates
        clock.step("all judged")
    finally:
        fleet.stop()
        camera.close()
        verdicts.close()
    clock.step("stopped")

    seen = verdicts.snapshot()
    judged = Counter(v.frame_id for v in seen if v.frame_id in camera.sent)
    report.sent = len(camera.sent)
    report.verdicts = len(seen)
    report.lost = len(set(camera.sent) - set(judged))
    report.duplicates = sum(n - 1 for n in judged.values())
    after_kill = sorted(
        v.decision_time
        for v in seen
        if v.decision_time > killed_at and camera.sent.get(v.frame_id) in mine
    )
    if after_kill:
        report.rebalance_after_kill_s = (after_kill[0] - killed_at).total_seconds()
    times = sorted(v.decision_time for v in seen if v.decision_time > joined_at)
    stretches = [joined_at, *times]
    report.pause_on_join_s = max(
        ((b - a).total_seconds() for a, b in zip(stretches, stretches[1:], strict=False)),
        default=0.0,
    )
    report.frames_per_s = frames_per_second(seen)
    return report


def throughput(
    bootstrap: str,
    fleet_env: Callable[[str], dict[str, str]],
    images: list[Image],
    logs: Path,
    workers: int,
    *,
    frames: int = 600,
    partitions: int = 6,
    timeout_s: float = 600.0,
) -> tuple[float, int]:
    """(frames/s, verdicts) of `workers` workers draining a backlog of `frames`."""
    run = f"tp{uuid.uuid4().hex[:8]}"
    line = f"{run}-l1"
    all_partitions = create_line(bootstrap, line, partitions)
    fleet = Fleet(fleet_env(run), logs / f"{workers}-workers")
    camera = Camera(bootstrap, line, partitions, images)
    verdicts = VerdictLog(bootstrap, line)
    try:
        fleet.start(workers)
        fleet.wait_balanced(all_partitions, timeout_s)  # the join is not measured
        camera.send(frames)
        sent = set(camera.sent)
        verdicts.wait_for(lambda vs: sent <= {v.frame_id for v in vs}, timeout_s)
    finally:
        fleet.stop()
        camera.close()
        verdicts.close()
    seen = verdicts.snapshot()
    return frames_per_second(seen), len({v.frame_id for v in seen})


# --- the command -----------------------------------------------------------------------


def _small_model(folder: Path) -> tuple[Path, list[Image]]:
    """A small model trained on a procedural line, and that line's test images."""
    from trainer.learning.config import TrainConfig
    from trainer.learning.export import export
    from trainer.learning.synthetic_dataset import generate
    from trainer.learning.train import train

    products = ("washer", "tile")
    data = generate(folder / "line", products=products, size=64, train=12, seed=5)
    result = train(data, TrainConfig(image_size=64, epochs=3, batch_size=8), progress=False)
    export(result, folder / "model", version="scale-out-1")
    return folder / "model", _test_images(data, products)


def _test_images(root: Path, products: tuple[str, ...]) -> list[Image]:
    return [
        (p, product)
        for product in products
        for p in sorted((root / product / "test").rglob("*.png"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.benchmarks.scale_out", description=__doc__
    )
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fps", type=float, default=20.0, help="camera rate of the scenario")
    parser.add_argument("--model", type=Path, help="artifact (default: a small one, trained here)")
    parser.add_argument("--source", type=Path, help="MVTec-layout folder of frames (with --model)")
    parser.add_argument("--out", type=Path, help="where the worker logs go (default: a temp dir)")
    args = parser.parse_args(argv)

    from deploy.local.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="kenpin-scale-") as scratch:
        out = args.out or Path(scratch) / "logs"
        if args.model:
            if args.source is None:
                parser.error("--model needs --source (the frames to stream)")
            from trainer.learning.data import discover

            model = args.model
            images = [
                (p, product.name)
                for product in discover(args.source)
                for p in sorted((product.root / "test").rglob("*.png"))
            ]
        else:
            print("training a small model on a procedural line ...", flush=True)
            model, images = _small_model(Path(scratch))
        with LocalStack(Path(scratch) / "stack", broker_storage="memory") as stack:
            s = stack.settings
            env = lambda run: worker_env(s.env, model, run)  # noqa: E731
            rows = []
            for n in (1, 2, 3):
                rate, judged = throughput(
                    s.kafka_bootstrap, env, images, out, n,
                    frames=args.frames, partitions=args.partitions,
                )  # fmt: skip
                rows.append((n, rate, judged))
                print(
                    f"{n} worker(s): {judged}/{args.frames} judged, {rate:.1f} frames/s", flush=True
                )
            report = run_scenario(
                s.kafka_bootstrap, env, images, out / "scenario",
                frames=args.frames, partitions=args.partitions, fps=args.fps,
            )  # fmt: skip
    print(report.summary())
    print()
    print(f"| workers | frames/s ({args.frames} frames, {args.partitions} partitions) |")
    print("|---|---|")
    for n, rate, _ in rows:
        print(f"| {n} | {rate:.1f} |")
    print()
    print(
        "| sent | verdicts | lost | duplicates | rebalance after kill -9 (s) | pause on join (s) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {report.sent} | {report.verdicts} | {report.lost} | {report.duplicates} | "
        f"{report.rebalance_after_kill_s:.1f} | {report.pause_on_join_s:.1f} |"
    )
    return 0 if report.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
