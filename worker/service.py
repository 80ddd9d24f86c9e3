"""The worker's loop: poll -> decode -> micro-batch -> judge -> publish -> store -> commit.

Delivery is at least once with idempotent outputs (docs/architecture.md): a
frame's offset is committed only after its verdict or dead letter is
acknowledged by the broker and, for an NG part, its heatmap is stored
(`worker.offsets` keeps that per partition). Anything not yet committed when
the worker dies is judged again by whoever owns the partition next; outputs are
keyed by frame id, so a replay overwrites.

The line is the topic's: a frame whose `line` header names another line is a
dead letter, so a camera cannot write verdicts or heatmaps into another line.

Faults degrade, they do not stop the line. Heatmaps are stored off the hot path
(`worker.heatmap_backlog`) and retried through an S3 outage while verdicts keep
flowing; when that backlog is full, or the broker refuses verdicts or commits,
consumption is paused, not the process killed, and everything is retried. Only
a broker that stays away past `broker_outage_deadline_s` ends the worker, with
one clear log line and exit code 3.

Decoding runs in a thread pool while the model judges the previous batch
(OpenCV releases the GIL).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from model.images import DecodeError
from model.runtime import InspectionModel
from planes.logs import get_logger
from planes.storage import ObjectStore
from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders, FrameHeadersError, part_identity
from schemas.object_layout import heatmap_key
from schemas.topics import line_from_topic, verdict_topic
from schemas.verdicts import Verdict, WorkerStages
from worker.decode import decode_frame
from worker.heatmap_backlog import HeatmapBacklog, HeatmapJob
from worker.hot_swap import HotSwap
from worker.kafka_io import (
    TopicAdmin,
    has_matching_topic,
    make_frame_consumer,
    make_producer,
    send_dead_letter,
    send_verdict,
)
from worker.live_scores import LiveScores
from worker.metrics import Health, WorkerMetrics, product_label
from worker.normals import NormalSampler
from worker.offsets import Held, OffsetTracker, Output
from worker.settings import WorkerSettings

log = get_logger(__name__)

#: One commit attempt; a failed one is retried (consumption paused) until
#: `broker_outage_deadline_s`.
COMMIT_TIMEOUT_MS = 10_000
#: Exit status of a worker that gave up on an unreachable broker.
EXIT_BROKER_UNREACHABLE = 3
_RETRY_FIRST_S, _RETRY_MAX_S = 0.5, 10.0


class Rejected(Exception):
    """A frame that gets a dead letter instead of a verdict."""

    def __init__(self, reason: DeadLetterReason, detail: str, frame_id: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.frame_id = reason, detail, frame_id


@dataclass
class Decoded:
    """A frame ready for the model: headers, the original pixels, the model-sized pixels."""

    headers: FrameHeaders
    original: np.ndarray
    prepared: np.ndarray


@dataclass
class Pending:
    """One consumed record, its decode in flight and its place in the commit order."""

    record: Any  # kafka ConsumerRecord
    decoded: Future[Decoded]
    polled_at: float  # monotonic: the batch policy's clock
    polled_wall: float  # epoch seconds: the latency budget's clock, as the capture time's
    held: Held


class Worker:
    """One consumer in the worker group. `run()` until `stop()` or SIGTERM."""

    def __init__(
        self,
        settings: WorkerSettings,
        model: InspectionModel,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        store: ObjectStore | None = None,
        metrics: WorkerMetrics | None = None,
        health: Health | None = None,
        hot_swap: HotSwap | None = None,
        normals: NormalSampler | None = None,
        live_scores: LiveScores | None = None,
        topics: TopicAdmin | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.hot_swap = hot_swap  # prepares new releases beside the live model
        self.normals = normals  # samples OK frames for retraining
        self.live_scores = live_scores  # counts judged scores for the line's own thresholds
        self.metrics = metrics or WorkerMetrics()
        self.health = health or Health()
        self.store = store or ObjectStore.from_settings(settings)
        self.producer = producer or make_producer(settings)
        self.topics = topics or TopicAdmin(settings, settings.topic_replication)
        self.consumer = consumer or make_frame_consumer(settings)
        self.subscribed = False
        self._next_topic_check = 0.0
        # when the current group join started; None while partitions are assigned
        self.joining_since: float | None = None
        self.decoders = ThreadPoolExecutor(settings.decode_threads, "decode")
        self.heatmaps = HeatmapBacklog(
            self.store,
            self.metrics,
            max_items=settings.heatmap_backlog_max,
            max_bytes=settings.heatmap_backlog_max_bytes,
            retry_max_s=settings.s3_retry_max_s,
        )
        self.buffer: deque[Pending] = deque()
        self.tracker = OffsetTracker()
        self.committed: dict[TopicPartition, int] = {}
        self.paused = False
        # the broker refusing verdicts or commits since (monotonic); None while it accepts
        self.broker_failing_since: float | None = None
        self._retry_commit_at = 0.0
        self._commit_backoff_s = _RETRY_FIRST_S
        self.resent: list[Output] = []  # outputs sent again, until acknowledged
        self.exit_code = 0
        self._stop = threading.Event()
        self.metrics.set_model_version(model.version)
        self.health.update(model_version=model.version)

    # --- lifecycle -------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        """Finish the batch in hand, commit, close (SIGTERM / SIGINT)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        """Judge frames until stopped; returns the process exit status (0, or 3: broker gone)."""
        log.info(
            "worker started",
            model=self.model.version,
            device=str(self.model.device),
            runtime=self.model.runtime,
            precision=self.model.precision,
            pattern=self.settings.frames_topic_pattern,
        )
        self.health.update(status="joining")  # ready (ok) once partitions are assigned
        try:
            while not self._stop.is_set():
                self.step()
            if self.exit_code == 0:
                # Frames still buffered are not committed: the next owner judges them.
                self.drain(self.settings.shutdown_grace_s)
        finally:
            self.close()
        return self.exit_code

    def close(self) -> None:
        self.health.update(status="stopping")
        if self.hot_swap is not None:
            self.hot_swap.stop()
        if self.normals is not None:
            self.normals.close()
        if self.live_scores is not None:
            self.live_scores.stop()
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.heatmaps.close()
        self.producer.close(timeout=self.settings.shutdown_grace_s)
        self.topics.close()
        self.consumer.close(autocommit=False, timeout_ms=int(self.settings.shutdown_grace_s * 1000))
        log.info("worker stopped", exit_code=self.exit_code)

    # --- the loop ----------------------------------------------------------------------

    def step(self) -> None:
        """One turn: take what arrived, judge one batch if it is due, commit what is done."""
        self.health.loop_turned()
        self.swap_if_ready()
        if not self.subscribe_once_a_line_exists():
            return
        self.restart_consumer_if_stalled()
        self.flow_control()
        wait_ms = self._poll_timeout_ms()
        polled = self.consumer.poll(timeout_ms=wait_ms, max_records=self.settings.max_batch * 4)
        now, wall = time.monotonic(), time.time()
        arrived = 0
        for tp, records in polled.items():
            arrived += len(records)
            for record in records:
                decoding = self.decoders.submit(self._decode, record)
                held = self.tracker.hold(tp, record.offset)  # commits wait for it from now
                self.buffer.append(Pending(record, decoding, now, wall, held))
        if self._batch_due(arrived):
            self.judge_batch(self._take_batch())
        self.commit_done()

    def subscribe_once_a_line_exists(self) -> bool:
        """Subscribe by pattern once a frame topic exists; False (and a short wait) until then."""
        if self.subscribed:
            return True
        now = time.monotonic()
        if now >= self._next_topic_check:
            self._next_topic_check = now + self.settings.metadata_max_age_ms / 1000
            try:
                found = has_matching_topic(self.consumer, self.settings.frames_topic_pattern)
            except KafkaError as exc:
                self.metrics.kafka_errors.labels(operation="metadata").inc()
                log.warning("cannot list topics yet", error=repr(exc))
                found = False
            if found:
                self.consumer.subscribe(
                    pattern=self.settings.frames_topic_pattern, listener=_Rebalance(self)
                )
                self.subscribed = True
                self.joining_since = time.monotonic()
                log.info("line topics found, joining the group")
                return True
        self._stop.wait(0.1)
        return False

    def restart_consumer_if_stalled(self) -> None:
        """A join that never completes would stop the line silently: start a new consumer.

        Seen with kafka-python against Tansu (the leader's SyncGroup answered, the
        assignment never applied); the cure is generic, for any client or broker
        fault that leaves the consumer out of its group. Finished frames are
        committed if the group still accepts it; the rest is judged again.
        """
        if self.joining_since is None:
            return
        stalled = time.monotonic() - self.joining_since
        if stalled < self.settings.rebalance_stall_s:
            return
        log.warning("group rebalance stalled, restarting the consumer", seconds=round(stalled))
        self.metrics.consumer_restarts.inc()
        self._commit(self.tracker.committable())
        self.tracker.clear()
        self.committed.clear()
        self.buffer.clear()
        self.paused = False
        self.consumer.close(autocommit=False, timeout_ms=COMMIT_TIMEOUT_MS)
        self.consumer = make_frame_consumer(self.settings)
        self.subscribed = False
        self._next_topic_check = 0.0
        self.joining_since = None

    def swap_if_ready(self) -> None:
        """Serve a release the hot swap has verified and warmed; only ever between batches."""
        ready = self.hot_swap.take_ready() if self.hot_swap is not None else None
        if ready is not None:
            self.model = ready
            self.hot_swap.swapped(ready)

    def flow_control(self) -> None:
        """Pause taking frames while heatmaps cannot be stored, the broker refuses outputs or
        `max_buffered_frames` wait to be judged.

        Kafka's pause stops fetching but keeps the group membership: the partitions
        stay this worker's, and frames wait in the broker, not in memory.
        """
        troubled = self.heatmaps.full() or self.broker_failing_since is not None
        wanted = troubled or len(self.buffer) >= self.settings.max_buffered_frames
        assignment = self.consumer.assignment()
        if wanted:
            if assignment:
                self.consumer.pause(*assignment)  # again after a rebalance: new partitions
            if not self.paused:
                # a full queue alone is the model catching up: nothing is wrong
                (log.warning if troubled else log.info)(
                    "consumption paused",
                    heatmaps_waiting=self.heatmaps.waiting,
                    broker_failing=self.broker_failing_since is not None,
                    queued=len(self.buffer),
                )
        elif self.paused:
            self.consumer.resume(*self.consumer.paused())
            log.info("consumption resumed")
        self.paused = wanted
        self.metrics.consumption_paused.set(1 if wanted else 0)

    def _poll_timeout_ms(self) -> int:
        """Wait for frames only when none is waiting: with some, just take what has arrived."""
        return 0 if self.buffer else 100

    def _batch_due(self, arrived: int) -> bool:
        """Judge at once when nothing else is queued; let a batch grow only under a backlog.

        A frame with nothing behind it is judged without waiting for company; while
        frames keep arriving the batch grows, up to `max_batch` or until its first
        frame has waited `max_wait_ms`.
        """
        if not self.buffer:
            return False
        if arrived == 0 or len(self.buffer) >= self.settings.max_batch:
            return True
        return (time.monotonic() - self.buffer[0].polled_at) * 1000 >= self.settings.max_wait_ms

    def _take_batch(self) -> list[Pending]:
        """The next batch from the queue: the oldest frames still in time, and frames past the
        line's deadline (`late_after_ms`) only when none in time waits.

        After a backlog (a restarted worker, a broker back from an outage) strict arrival
        order would make every part captured while it drains miss its deadline too; this
        way those parts are judged in time and the late ones with the spare capacity, in
        batches of `late_batch`. A record without a timestamp counts as in time. The record's
        timestamp is the camera's send time, so the camera's clock must agree with the
        worker's (as with the bridge's, which counts the deadline from the capture time).
        """
        size = self.settings.max_batch
        if self.settings.late_after_ms <= 0:
            return [self.buffer.popleft() for _ in range(min(len(self.buffer), size))]
        cutoff = time.time() * 1000 - self.settings.late_after_ms
        in_time = [p for p in self.buffer if _sent_at(p.record, cutoff) >= cutoff]
        if not in_time:  # small batches: a frame in time may arrive at any moment
            late = min(len(self.buffer), self.settings.late_batch)
            batch = [self.buffer.popleft() for _ in range(late)]
            self.metrics.late_frames.inc(len(batch))
            return batch
        batch = in_time[:size]
        if len(in_time) < len(self.buffer):
            taken = {id(p) for p in batch}
            self.buffer = deque(p for p in self.buffer if id(p) not in taken)
        else:
            for _ in batch:
                self.buffer.popleft()
        return batch

    def _decode(self, record: Any) -> Decoded:
        """Headers, then bytes: any failure is a Rejected with the dead-letter reason."""
        try:
            headers = FrameHeaders.from_kafka_headers(record.headers)
        except FrameHeadersError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        line = line_from_topic(record.topic)
        if headers.line != line:
            raise Rejected(
                DeadLetterReason.LINE_MISMATCH,
                f"frame says line {headers.line!r} but came from {record.topic!r} "
                f"(line {line!r}): the topic decides the line",
                headers.frame_id,
            )
        if self.model.threshold(headers.product) is None:
            raise Rejected(
                DeadLetterReason.UNKNOWN_PRODUCT,
                f"model {self.model.version} has no threshold for product {headers.product!r}",
                headers.frame_id,
            )
        try:
            original = decode_frame(
                record.value or b"", headers.content_type, self.settings.max_image_pixels
            )
        except DecodeError as exc:
            raise Rejected(exc.reason, exc.detail, headers.frame_id) from exc
        return Decoded(headers, original, self.model.prepare(original))

    def judge_batch(self, batch: list[Pending]) -> None:
        """One forward pass for the decodable frames, a dead letter for each of the rest."""
        model = self.model  # a hot swap replaces self.model only between batches
        outputs: dict[int, list[Output]] = {}
        frames: list[tuple[Pending, Decoded]] = []
        for i, pending in enumerate(batch):
            self.metrics.frames.labels(line=_line(pending.record.topic)).inc()
            try:
                frames.append((pending, _fit(model, pending.decoded.result())))
            except Rejected as exc:
                outputs[i] = [self._dead_letter(pending.record, exc)]
            except Exception as exc:  # a bug must not stop the line: dead-letter the frame
                log.exception("decode failed unexpectedly", offset=pending.record.offset)
                outputs[i] = [
                    self._dead_letter(
                        pending.record, Rejected(DeadLetterReason.PROCESSING_ERROR, repr(exc))
                    )
                ]
        if frames:
            started, judging = time.perf_counter(), time.time()
            judgement = model.judge([d.prepared for _, d in frames])
            self.metrics.inference.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(frames))
            judged = time.time()
            index = {id(p): i for i, p in enumerate(batch)}
            for (pending, decoded), score, amap in zip(
                frames, judgement.scores, judgement.maps, strict=True
            ):
                stages = WorkerStages(
                    polled=pending.polled_wall * 1000, judging=judging * 1000, judged=judged * 1000
                )
                self._observe_stages(decoded.headers, stages)
                outputs[index[id(pending)]] = self._verdict(
                    model, pending, decoded, float(score), amap, stages
                )
        for i, pending in enumerate(batch):
            pending.held.judged_with(outputs[i])

    def _verdict(
        self,
        model: InspectionModel,
        pending: Pending,
        decoded: Decoded,
        score: float,
        amap: np.ndarray,
        stages: WorkerStages | None = None,
    ) -> list[Output]:
        headers = decoded.headers  # headers.line is the topic's line (checked at decode)
        threshold = model.threshold(headers.product, headers.line)
        assert threshold is not None  # checked at decode time
        ng = score > threshold
        if self.live_scores is not None:
            # binned under the product's threshold, which a line's own threshold leaves as it
            # is: the counts of releases that differ in line thresholds only stay comparable
            base = model.threshold(headers.product)
            assert base is not None
            self.live_scores.count(model.version, headers.line, headers.product, score, base, ng)
        key = heatmap_key(headers.line, headers.capture_time, headers.frame_id) if ng else None
        verdict = Verdict.for_frame(
            headers,
            result="ng" if ng else "ok",
            score=score,
            threshold=threshold,
            model_version=model.version,
            heatmap_key=key,
        )
        partitions = len(self.consumer.partitions_for_topic(pending.record.topic) or ()) or 1
        topic = verdict_topic(headers.line, self.settings.verdicts_topic_prefix)
        outputs = [
            self._send(
                "verdict",
                lambda: send_verdict(
                    self.producer, verdict, self.settings.verdicts_topic_prefix, stages
                ),
                topic,
                partitions,
            )
        ]
        self.metrics.verdicts.labels(
            line=headers.line, product=headers.product, result=verdict.result
        ).inc()
        self.metrics.latency.labels(line=headers.line, product=headers.product).observe(
            max(0.0, verdict.latency_ms / 1000)
        )
        if not ng and self.normals is not None:
            self.normals.offer(headers, pending.record.value, score, threshold)
        if ng:
            job = HeatmapJob(headers, pending.record.value, decoded.original, amap, threshold)
            outputs.append(Output(self.heatmaps.submit(job)))
        return outputs

    def _observe_stages(self, headers: FrameHeaders, stages: WorkerStages) -> None:
        """Each stage of a frame's way through the worker, as `kenpin_frame_stage_seconds`."""
        captured = headers.capture_time.timestamp() * 1000
        for stage, ms in (
            ("to_worker", stages.polled - captured),
            ("queue", stages.judging - stages.polled),
            ("model", stages.judged - stages.judging),
        ):
            self.metrics.stages.labels(stage=stage).observe(max(0.0, ms / 1000))

    def _dead_letter(self, record: Any, exc: Rejected) -> Output:
        part_id, sequence = part_identity(record.headers)
        letter = DeadLetter.from_record(
            reason=exc.reason,
            detail=exc.detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            frame_id=exc.frame_id,
            # the part the PLC must reject, even when the other headers are broken
            part_id=part_id,
            sequence=sequence,
            max_value_bytes=self.settings.deadletter_max_original_bytes,
        )
        self.metrics.deadletters.labels(
            line=_line(record.topic),
            product=product_label(record.headers, lambda p: self.model.threshold(p) is not None),
            reason=exc.reason.value,
        ).inc()
        log.warning(
            "dead letter",
            reason=exc.reason.value,
            detail=exc.detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        return self._send(
            "dead_letter",
            lambda: send_dead_letter(self.producer, letter, self.settings.deadletter_topic),
            self.settings.deadletter_topic,
            1,
        )

    def _send(self, operation: str, send: Callable[[], Any], topic: str, partitions: int) -> Output:
        """Send through the producer, creating `topic` first if needed; failures are retried.

        The topic is one this worker may write to (the verdict topic of a line it
        reads, or the dead-letter topic), created on purpose: the producer never
        creates one by sending.
        """

        def attempt() -> Future:
            future: Future = Future()
            try:
                self.topics.ensure(topic, partitions)
                _chain(send(), future)
            except KafkaError as exc:  # broker away: no metadata, buffer full, ...
                future.set_exception(exc)
            return future

        return Output(attempt(), resend=attempt, operation=operation)

    # --- commits -----------------------------------------------------------------------

    def commit_done(self) -> None:
        """Retry refused outputs, then commit each partition up to its oldest pending frame."""
        self._retry_failed_outputs()
        if self.exit_code:
            return
        offsets = {
            tp: offset
            for tp, offset in self.tracker.committable().items()
            if self.committed.get(tp) != offset
        }
        if offsets:
            if time.monotonic() < self._retry_commit_at:
                return
            if not self._commit(offsets):
                self.metrics.broker_retries.labels(operation="commit").inc()
                self.metrics.kafka_errors.labels(operation="commit").inc()
                self._broker_failing("commit")
                self._retry_commit_at = time.monotonic() + self._commit_backoff_s
                self._commit_backoff_s = min(self._commit_backoff_s * 2, _RETRY_MAX_S)
                return
            self._commit_backoff_s = _RETRY_FIRST_S
        # recovered once every output sent again has been acknowledged, and commits pass
        self.resent = [o for o in self.resent if not o.done()]
        if not self.resent:
            self._broker_recovered()

    def _commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """One commit attempt; True if the broker took it."""
        if not offsets:
            return True
        try:
            self.consumer.commit(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                timeout_ms=COMMIT_TIMEOUT_MS,
            )
        except KafkaError as exc:
            log.warning("commit refused, will retry", error=repr(exc))
            return False
        self.committed.update(offsets)
        return True

    def _retry_failed_outputs(self) -> None:
        """Send again what the broker refused; give up only past the outage deadline."""
        failed = self.tracker.failed_outputs()
        for output in failed:
            if output.resend is None:  # a heatmap abandoned at shutdown: not committed
                continue
            self._broker_failing(output.operation, output.failed())
            if self.exit_code:
                return
            self.metrics.broker_retries.labels(operation=output.operation).inc()
            self.metrics.kafka_errors.labels(operation=output.operation).inc()
            output.attempts += 1
            output.future = output.resend()
            if output not in self.resent:
                self.resent.append(output)
            if output.failed() is not None:
                break  # refused at once (no metadata): the broker is away, try next turn

    def _broker_failing(self, operation: str, error: BaseException | None = None) -> None:
        now = time.monotonic()
        if self.broker_failing_since is None:
            self.broker_failing_since = now
            log.warning(
                "broker refusing outputs; pausing consumption and retrying",
                operation=operation,
                error=repr(error) if error else None,
                deadline_s=self.settings.broker_outage_deadline_s,
            )
        elif now - self.broker_failing_since > self.settings.broker_outage_deadline_s:
            log.error(
                "broker unreachable past the deadline, exiting: uncommitted frames will be "
                "judged again by the next owner",
                operation=operation,
                outage_s=round(now - self.broker_failing_since),
                uncommitted_frames=self.tracker.pending() + len(self.buffer),
            )
            self.exit_code = EXIT_BROKER_UNREACHABLE
            self._stop.set()

    def _broker_recovered(self) -> None:
        if self.broker_failing_since is not None:
            log.info(
                "broker accepting outputs again",
                outage_s=round(time.monotonic() - self.broker_failing_since, 1),
            )
            self.broker_failing_since = None

    def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for outputs in flight, and commit what is done."""
        deadline = time.monotonic() + timeout_s
        self.producer.flush(timeout=timeout_s)
        self._retry_commit_at = 0.0
        while self.tracker.pending() and time.monotonic() < deadline:
            self.commit_done()
            time.sleep(0.05)
        self._retry_commit_at = 0.0
        self.commit_done()


class _Rebalance(ConsumerRebalanceListener):
    """Before partitions move to another worker, commit what this one finished."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        worker = self.worker
        worker.joining_since = time.monotonic()  # a rebalance starts with a revoke
        if not revoked:
            return
        lost = set(revoked)
        worker.health.partitions_changed(0)
        worker.producer.flush(timeout=worker.settings.shutdown_grace_s)
        # what is done is committed; pending frames are judged again by the new owner
        worker._commit({tp: o for tp, o in worker.tracker.committable().items() if tp in lost})
        worker.tracker.forget(lost)
        for tp in lost:
            worker.committed.pop(tp, None)
        worker.buffer = deque(
            p
            for p in worker.buffer
            if TopicPartition(p.record.topic, p.record.partition) not in lost
        )

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        worker = self.worker
        worker.joining_since = None
        worker.health.partitions_changed(len(assigned))
        worker.health.update(status="ok")
        log.info(
            "partitions assigned",
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
        )


def _chain(send: Any, future: Future) -> None:
    """Complete `future` when the Kafka send `send` is acknowledged or fails."""
    send.add_callback(future.set_result)
    send.add_errback(future.set_exception)


def _fit(model: InspectionModel, decoded: Decoded) -> Decoded:
    """A frame decoded for the previous model, made fit for `model` after a hot swap."""
    if model.threshold(decoded.headers.product) is None:
        raise Rejected(
            DeadLetterReason.UNKNOWN_PRODUCT,
            f"model {model.version} has no threshold for product {decoded.headers.product!r}",
            decoded.headers.frame_id,
        )
    if decoded.prepared.shape[:2] != (model.image_size, model.image_size):
        decoded.prepared = model.prepare(decoded.original)
    return decoded


def _sent_at(record: Any, unknown: float) -> float:
    """The record's timestamp (epoch ms; the producer's send time), `unknown` without one
    (kafka-python gives -1 or None)."""
    stamp = record.timestamp
    return stamp if stamp is not None and stamp > 0 else unknown


def _line(topic: str) -> str:
    try:
        return line_from_topic(topic)
    except ValueError:
        return "unknown"
