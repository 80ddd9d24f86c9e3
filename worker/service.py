"""The worker's loop: poll -> decode -> micro-batch -> judge -> publish -> store -> commit.

Delivery is at least once with idempotent outputs (ARCHITECTURE.md): a batch's
offsets are committed only after every verdict and dead letter of the batch is
acknowledged by the broker and every heatmap of it is stored. Batches complete
in order, so committing "highest offset + 1" per partition never skips a frame.
Anything not yet committed when the worker dies is judged again by whoever owns
the partition next; outputs are keyed by frame id, so a replay overwrites.

Decoding runs in a thread pool while the model judges the previous batch
(OpenCV releases the GIL); heatmaps are rendered and stored in another pool, off
the hot path, and their completion only gates the commit, not the next batch.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders, FrameHeadersError
from schemas.verdicts import Verdict
from worker.decode import DecodeError, decode_frame
from worker.heatmaps import frame_key, heatmap_key, render_overlay
from worker.hot_swap import HotSwap
from worker.kafka_io import (
    line_from_topic,
    make_frame_consumer,
    make_producer,
    send_dead_letter,
    send_verdict,
)
from worker.logs import get_logger
from worker.metrics import Health, WorkerMetrics
from worker.model.runtime import InspectionModel
from worker.normals import NormalSampler
from worker.settings import WorkerSettings
from worker.storage import ObjectStore

log = get_logger(__name__)

#: A commit that takes longer fails (and, on the hot path, stops the worker, whose
#: uncommitted frames are then judged again): better than a loop blocked for good.
COMMIT_TIMEOUT_MS = 30_000


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
    """One consumed record and its decode in flight."""

    record: Any  # kafka ConsumerRecord
    decoded: Future[Decoded]
    polled_at: float


@dataclass
class Completion:
    """What must finish before a batch's offsets may be committed."""

    offsets: dict[TopicPartition, int]
    waits: list[Future] = field(default_factory=list)

    def done(self) -> bool:
        return all(f.done() for f in self.waits)

    def result(self) -> None:
        """Raise the first failure: a verdict the broker refused, a heatmap not stored."""
        for f in self.waits:
            f.result()


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
    ) -> None:
        self.settings = settings
        self.model = model
        self.hot_swap = hot_swap  # prepares new releases beside the live model
        self.normals = normals  # samples OK frames for retraining
        self.metrics = metrics or WorkerMetrics()
        self.health = health or Health()
        self.store = store or ObjectStore.from_settings(settings)
        self.producer = producer or make_producer(settings)
        self.consumer = self._subscribed(consumer or make_frame_consumer(settings))
        # when the current group join started; None while partitions are assigned
        self.joining_since: float | None = time.monotonic()
        self.decoders = ThreadPoolExecutor(settings.decode_threads, "decode")
        self.uploads = ThreadPoolExecutor(2, "heatmap")
        self.buffer: deque[Pending] = deque()
        self.completions: deque[Completion] = deque()
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

    def run(self) -> None:
        log.info(
            "worker started",
            model=self.model.version,
            device=str(self.model.device),
            precision=self.model.precision,
            pattern=self.settings.frames_topic_pattern,
        )
        self.health.update(status="joining")  # ready (ok) once partitions are assigned
        try:
            while not self._stop.is_set():
                self.step()
            # Frames still buffered are not committed: the next owner judges them.
            self.drain()
        finally:
            self.close()

    def close(self) -> None:
        self.health.update(status="stopping")
        if self.hot_swap is not None:
            self.hot_swap.stop()
        if self.normals is not None:
            self.normals.close()
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.uploads.shutdown(wait=True)
        self.producer.flush()
        self.producer.close()
        self.consumer.close(autocommit=False)
        log.info("worker stopped")

    # --- the loop ----------------------------------------------------------------------

    def step(self) -> None:
        """One turn: take what arrived, judge one batch if it is due, commit what is done."""
        self.swap_if_ready()
        self.restart_consumer_if_stalled()
        wait_ms = self._poll_timeout_ms()
        polled = self.consumer.poll(timeout_ms=wait_ms, max_records=self.settings.max_batch * 4)
        now = time.monotonic()
        for records in polled.values():
            for record in records:
                self.buffer.append(Pending(record, self.decoders.submit(self._decode, record), now))
        if self._batch_due():
            self.judge_batch(
                [
                    self.buffer.popleft()
                    for _ in range(min(len(self.buffer), self.settings.max_batch))
                ]
            )
        self.commit_done()

    def _subscribed(self, consumer: KafkaConsumer) -> KafkaConsumer:
        """Subscribe with a listener, so that a rebalance commits what is done first."""
        consumer.subscribe(
            pattern=self.settings.frames_topic_pattern, listener=_CommitOnRevoke(self)
        )
        return consumer

    def restart_consumer_if_stalled(self) -> None:
        """A join that never completes would stop the line silently: start a new consumer.

        Seen with kafka-python against Tansu (the leader's SyncGroup answered, the
        assignment never applied); the cure is generic, for any client or broker
        fault that leaves the consumer out of its group. Finished batches are
        committed if the group still accepts it; the rest is judged again.
        """
        if self.joining_since is None:
            return
        stalled = time.monotonic() - self.joining_since
        if stalled < self.settings.rebalance_stall_s:
            return
        log.warning("group rebalance stalled, restarting the consumer", seconds=round(stalled))
        self.metrics.consumer_restarts.inc()
        try:
            self.drain()
        except KafkaError as exc:  # the generation is gone: those frames are judged again
            log.warning("could not commit before the restart", error=repr(exc))
        self.completions.clear()
        self.buffer.clear()
        self.consumer.close(autocommit=False, timeout_ms=COMMIT_TIMEOUT_MS)
        self.consumer = self._subscribed(make_frame_consumer(self.settings))
        self.joining_since = time.monotonic()

    def swap_if_ready(self) -> None:
        """Serve a release the hot swap has verified and warmed; only ever between batches."""
        ready = self.hot_swap.take_ready() if self.hot_swap is not None else None
        if ready is not None:
            self.model = ready
            self.hot_swap.swapped(ready)

    def _poll_timeout_ms(self) -> int:
        if not self.buffer:
            return 100
        waited_ms = (time.monotonic() - self.buffer[0].polled_at) * 1000
        return int(max(0, self.settings.max_wait_ms - waited_ms))

    def _batch_due(self) -> bool:
        if not self.buffer:
            return False
        if len(self.buffer) >= self.settings.max_batch:
            return True
        return (time.monotonic() - self.buffer[0].polled_at) * 1000 >= self.settings.max_wait_ms

    def _decode(self, record: Any) -> Decoded:
        """Headers, then bytes: any failure is a Rejected with the dead-letter reason."""
        try:
            headers = FrameHeaders.from_kafka_headers(record.headers)
        except FrameHeadersError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
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
        completion = Completion(_next_offsets(p.record for p in batch))
        frames: list[tuple[Pending, Decoded]] = []
        for pending in batch:
            self.metrics.frames.labels(line=_line(pending.record.topic)).inc()
            try:
                frames.append((pending, _fit(model, pending.decoded.result())))
            except Rejected as exc:
                completion.waits.append(self._dead_letter(pending.record, exc))
            except Exception as exc:  # a bug must not stop the line: dead-letter the frame
                log.exception("decode failed unexpectedly", offset=pending.record.offset)
                completion.waits.append(
                    self._dead_letter(
                        pending.record, Rejected(DeadLetterReason.PROCESSING_ERROR, repr(exc))
                    )
                )
        if frames:
            judgement = model.judge([d.prepared for _, d in frames])
            self.metrics.batch_size.observe(len(frames))
            for (pending, decoded), score, amap in zip(
                frames, judgement.scores, judgement.maps, strict=True
            ):
                completion.waits.extend(self._verdict(model, pending, decoded, float(score), amap))
        self.completions.append(completion)

    def _verdict(
        self,
        model: InspectionModel,
        pending: Pending,
        decoded: Decoded,
        score: float,
        amap: np.ndarray,
    ) -> list[Future]:
        headers = decoded.headers
        threshold = model.threshold(headers.product)
        assert threshold is not None  # checked at decode time
        ng = score > threshold
        key = heatmap_key(headers.line, headers.capture_time, headers.frame_id) if ng else None
        verdict = Verdict.for_frame(
            headers,
            result="ng" if ng else "ok",
            score=score,
            threshold=threshold,
            model_version=model.version,
            heatmap_key=key,
        )
        waits: list[Future] = [
            _acked(send_verdict(self.producer, verdict, self.settings.verdicts_topic_prefix))
        ]
        self.metrics.verdicts.labels(result=verdict.result).inc()
        self.metrics.latency.observe(max(0.0, verdict.latency_ms / 1000))
        if not ng and self.normals is not None:
            self.normals.offer(headers, pending.record.value, score, threshold)
        if ng:
            waits.append(
                self.uploads.submit(
                    self._store_ng, headers, pending.record.value, decoded.original, amap, threshold
                )
            )
        return waits

    def _store_ng(
        self,
        headers: FrameHeaders,
        raw: bytes,
        original: np.ndarray,
        amap: np.ndarray,
        threshold: float,
    ) -> None:
        """Heatmap overlay and the original bytes, beside each other, for operator review."""
        png = render_overlay(
            original, amap, vmin=float(np.median(amap)), vmax=max(threshold, float(amap.max()))
        )
        self.store.put(
            heatmap_key(headers.line, headers.capture_time, headers.frame_id), png, "image/png"
        )
        self.store.put(
            frame_key(headers.line, headers.capture_time, headers.frame_id, headers.content_type),
            raw,
            headers.content_type,
            # lets an operator file the frame as a normal of its product (mark-good)
            metadata={"product": headers.product, "frame-id": headers.frame_id},
        )

    def _dead_letter(self, record: Any, exc: Rejected) -> Future:
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
            max_value_bytes=self.settings.deadletter_max_original_bytes,
        )
        self.metrics.deadletters.labels(reason=exc.reason.value).inc()
        log.warning(
            "dead letter",
            reason=exc.reason.value,
            detail=exc.detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        return _acked(send_dead_letter(self.producer, letter, self.settings.deadletter_topic))

    # --- commits -----------------------------------------------------------------------

    def commit_done(self) -> None:
        """Commit, in order, every leading batch whose outputs are all acknowledged."""
        offsets: dict[TopicPartition, int] = {}
        while self.completions and self.completions[0].done():
            completion = self.completions.popleft()
            completion.result()  # a failed verdict or heatmap stops here: no commit, crash
            offsets.update(completion.offsets)
        if offsets:
            self.consumer.commit(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                timeout_ms=COMMIT_TIMEOUT_MS,
            )

    def drain(self) -> None:
        """Wait for every batch in flight and commit it (shutdown, partitions revoked)."""
        self.producer.flush()
        for completion in self.completions:
            completion.result()
        self.commit_done()


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another worker, commit what this one finished."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.joining_since = time.monotonic()  # a rebalance starts with a revoke
        if not revoked:
            return
        self.worker.drain()
        lost = set(revoked)
        # buffered frames of lost partitions will be judged by their new owner
        self.worker.buffer = deque(
            p
            for p in self.worker.buffer
            if TopicPartition(p.record.topic, p.record.partition) not in lost
        )

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.joining_since = None
        self.worker.health.update(status="ok")
        log.info(
            "partitions assigned",
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
        )


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


def _acked(send: Any) -> Future:
    """A Kafka send as a standard Future, done when the broker acknowledged the record."""
    future: Future = Future()
    send.add_callback(future.set_result)
    send.add_errback(future.set_exception)
    return future


def _next_offsets(records: Any) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


def _line(topic: str) -> str:
    try:
        return line_from_topic(topic)
    except ValueError:
        return "unknown"
