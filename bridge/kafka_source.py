"""The bridge's Kafka reader: parts (or frames, for their headers), verdicts and dead letters.

A part's deadline starts from its frame's headers. Where a line has a parts topic
(`kenpin.parts.<line>`: the camera announces each frame there, headers without the
image), the bridge reads that and never the line's frames: it fetches no image bytes,
however large the images or fast the line. A line without one is read from its
frames topic, as before; a line that gains one moves over at the next discovery (a
part announced and also seen as a frame is one part: the tracker keys it by frame id).

Its own client, because the bridge imports nothing of the worker (it runs
beside the PLCs, often in another network zone); the settings mirror the
worker's (`worker.kafka_io`) where they mean the same.

Why no consumer group: every bridge must see every line (two bridges for
redundancy would each get only part of the lines in a shared group, and a
rebalance would pause all lines while a new line joins), and the bridge has no
offsets worth keeping, because only live parts matter to a PLC. So it assigns
itself every partition of the matching topics, and looks for new ones every
`metadata_max_age_ms`:

- partitions that exist when the bridge starts are read from their end: the
  parts behind them are gone from the conveyor, a verdict for them now would
  only confuse the PLC;
- partitions that appear later (a new line, or a line's verdict topic, which a
  worker creates with its first verdict) are read from their beginning, so a
  new line's first parts are not missed.

kafka-python blocks, so this runs in a thread of its own and hands batches of
events to the OPC UA server's event loop through a callback.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from pydantic import ValidationError

from bridge.deadlines import DeadLetterArrived, Event, FrameSeen, VerdictArrived, coordinates
from bridge.settings import BridgeSettings
from planes.kafka import fetch_options, security_config
from planes.logs import get_logger
from schemas.deadletters import DeadLetter
from schemas.frames import FrameHeaders, FrameHeadersError, part_identity
from schemas.topics import line_from_topic
from schemas.verdicts import Verdict

log = get_logger(__name__)


def consumer_config(settings: BridgeSettings) -> dict[str, Any]:
    """Keyword arguments for the bridge's KafkaConsumer: no group, no commits, live data."""
    return security_config(settings) | {
        "client_id": "kenpin-bridge",
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "metadata_max_age_ms": settings.metadata_max_age_ms,
        **fetch_options(settings),
        "request_timeout_ms": 30_000,
        "allow_auto_create_topics": False,
    }


class KafkaSource:
    """Reads the three kinds of topics and calls `deliver` with each batch of events."""

    def __init__(
        self,
        settings: BridgeSettings,
        deliver: Callable[[list[Event]], None],
        on_partitions: Callable[[int, set[str]], None] = lambda count, lines: None,
        consumer: Any = None,
    ) -> None:
        self.settings = settings
        self.deliver = deliver
        self.on_partitions = on_partitions
        self.consumer = consumer
        self.frames = re.compile(settings.frames_topic_pattern)
        self.parts = re.compile(settings.parts_topic_pattern)
        self.verdicts = re.compile(settings.verdicts_topic_pattern)
        self.assigned: set[TopicPartition] = set()
        self.discovered_once = False
        self._next_discovery = 0.0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Read until `stop()`; broker faults are logged and retried, never raised."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.consumer is None:
                    self.consumer = KafkaConsumer(**consumer_config(self.settings))
                self.discover()
                if not self.assigned:
                    self._stop.wait(0.1)
                    continue
                polled = self.consumer.poll(timeout_ms=100)
                seen_at = time.monotonic()
                events = self.events(polled, seen_at)
                if events:
                    self.deliver(events)
                backoff = 0.5
            except KafkaError as exc:
                log.warning("kafka unavailable, retrying", error=repr(exc), retry_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                # a reader that died quietly would leave the PLC without TIMEOUTs: log, go on
                log.exception("kafka reader failed, retrying", retry_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        if self.consumer is not None:
            self.consumer.close(autocommit=False)

    def wanted(self, topic: str) -> bool:
        return (
            topic == self.settings.deadletter_topic
            or bool(self.frames.match(topic))
            or bool(self.parts.match(topic))
            or bool(self.verdicts.match(topic))
        )

    def discover(self) -> None:
        """Assign every partition of the matching topics (see the module doc for where from)."""
        now = time.monotonic()
        if now < self._next_discovery:
            return
        self._next_discovery = now + self.settings.metadata_max_age_ms / 1000
        partitions = {
            TopicPartition(topic, p)
            for topic in self.consumer.topics()
            if self.wanted(topic)
            for p in self.consumer.partitions_for_topic(topic) or ()
        }
        announced = {line_from_topic(tp.topic) for tp in partitions if self.parts.match(tp.topic)}
        partitions = {
            tp
            for tp in partitions
            if not (self.frames.match(tp.topic) and line_from_topic(tp.topic) in announced)
        }
        new = partitions - self.assigned
        if partitions == self.assigned and self.discovered_once:
            return
        self.consumer.assign(sorted(partitions))
        if new:
            if self.discovered_once:
                self.consumer.seek_to_beginning(*new)
            else:
                self.consumer.seek_to_end(*new)
            for tp in new:
                # resolved now, not at the next poll: from here on no record is skipped,
                # so the partition count published below means "reading"
                self.consumer.position(tp, timeout_ms=10_000)
            log.info(
                "reading partitions",
                new=sorted(f"{tp.topic}/{tp.partition}" for tp in new),
                start="beginning" if self.discovered_once else "end",
            )
        self.assigned = partitions
        self.discovered_once = True
        self.on_partitions(
            len(partitions),
            {
                line_from_topic(tp.topic)
                for tp in partitions
                if tp.topic != self.settings.deadletter_topic
            },
        )

    def events(self, polled: dict[TopicPartition, list[Any]], seen_at: float) -> list[Event]:
        """Events of one poll, frames first: a verdict polled with its frame then finds it."""
        frames: list[Event] = []
        others: list[Event] = []
        for tp, records in polled.items():
            for record in records:
                if tp.topic == self.settings.deadletter_topic:
                    event = self._dead_letter(record, seen_at)
                elif self.parts.match(tp.topic):
                    announced = self._announced(record, seen_at)
                    if announced is not None:
                        frames.append(announced)
                    continue
                elif self.frames.match(tp.topic):
                    frames.append(self._frame(record, seen_at))
                    continue
                else:
                    event = self._verdict(record, seen_at)
                if event is not None:
                    others.append(event)
        return frames + others

    def _frame(self, record: Any, seen_at: float) -> FrameSeen:
        line = line_from_topic(record.topic)
        where = coordinates(record.topic, record.partition, record.offset)
        try:
            h = FrameHeaders.from_kafka_headers(record.headers)
        except FrameHeadersError:
            # its dead letter will name it by where it lies; keep what can be read of the part
            part_id, sequence = part_identity(record.headers)
            return FrameSeen(line, where, seen_at, part_id=part_id, capture_sequence=sequence)
        return _seen(record, seen_at, h)

    def _announced(self, record: Any, seen_at: float) -> FrameSeen | None:
        """A part announced: its frame's headers. Unreadable ones are skipped (logged): the
        frame itself, with the same headers, becomes a dead letter that names it by where
        it lies in the frames topic, which an announcement cannot stand in for."""
        try:
            h = FrameHeaders.from_kafka_headers(record.headers)
        except FrameHeadersError as exc:
            log.warning(
                "unreadable part announcement, skipped",
                topic=record.topic,
                offset=record.offset,
                error=str(exc),
            )
            return None
        return _seen(record, seen_at, h)

    def _verdict(self, record: Any, seen_at: float) -> VerdictArrived | None:
        try:
            verdict = Verdict.from_json(record.value or b"")
        except ValidationError as exc:
            log.warning(
                "not a verdict, skipped",
                topic=record.topic,
                offset=record.offset,
                error=str(exc).splitlines()[0],
            )
            return None
        return VerdictArrived(line_from_topic(record.topic), verdict, seen_at)

    def _dead_letter(self, record: Any, seen_at: float) -> DeadLetterArrived | None:
        try:
            letter = DeadLetter.from_json(record.value or b"")
        except ValidationError as exc:
            log.warning(
                "not a dead letter, skipped", offset=record.offset, error=str(exc).splitlines()[0]
            )
            return None
        if not self.frames.match(letter.source_topic):
            return None  # another plant's or a test's line: not ours to decide
        return DeadLetterArrived(line_from_topic(letter.source_topic), letter, seen_at)


def _seen(record: Any, seen_at: float, h: FrameHeaders) -> FrameSeen:
    """The part of a frame (or its announcement) whose headers were read."""
    return FrameSeen(
        line_from_topic(record.topic),
        coordinates(record.topic, record.partition, record.offset),
        seen_at,
        frame_id=h.frame_id,
        part_id=h.part_id,
        capture_sequence=h.sequence,
        camera=h.camera,
        product=h.product,
        capture_time=h.capture_time,
    )
