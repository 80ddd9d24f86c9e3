"""Live verdicts for the page: a Kafka reader thread, and a hub that fans them out to browsers.

`VerdictFeed` reads every line's verdict topic (found by prefix, rechecked every
`topic_refresh_s`, so a new line appears without a restart). It assigns the
partitions itself instead of joining a consumer group: a group would share the
partitions out between console processes, and each operator's page must see every
verdict; the console commits nothing, so it never moves the workers' or anyone's
offsets. At start it reads back the last `backfill_per_partition` verdicts of
each partition, so the page and the NG gallery are filled after a restart.

`VerdictHub` keeps the recent verdicts per line and the recent NG frames, keyed
by frame id (a replayed verdict replaces its first copy instead of listing the
part twice), and hands each new verdict to every subscribed event stream through
an asyncio queue of its own. A slow browser loses its oldest queued verdicts,
never stalls the reader or the other browsers.

kafka-python is imported where the consumer is made and read (the feed's
thread), not at the top: the hub and the pages do without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from planes.kafka import fetch_options, security_config
from planes.logs import get_logger
from schemas.topics import verdict_topic
from schemas.verdicts import Verdict

if TYPE_CHECKING:  # kafka-python is imported where the feed runs, not by the pages
    from kafka import KafkaConsumer, TopicPartition

    from console.settings import ConsoleSettings

log = get_logger(__name__)

#: Verdicts waiting for one browser; beyond it the oldest are dropped.
SUBSCRIBER_QUEUE = 256


@dataclass
class LineState:
    """One line on the page: its recent verdicts (newest last) and counts since start."""

    recent: OrderedDict[str, Verdict] = field(default_factory=OrderedDict)
    ok: int = 0
    ng: int = 0


@dataclass
class FeedState:
    """How the reader is doing, shown on the page (an operator must see a dead feed)."""

    connected: bool = False
    error: str | None = None
    topics: int = 0


class VerdictHub:
    """Recent verdicts per line and NG frames, and the event streams that want new ones."""

    def __init__(self, recent_per_line: int = 20, gallery_size: int = 12) -> None:
        self.recent_per_line = recent_per_line
        self.gallery_size = gallery_size
        self.feed = FeedState()
        self._lines: dict[str, LineState] = {}
        self._gallery: OrderedDict[str, Verdict] = OrderedDict()
        self._filed: dict[str, str] = {}  # frame id -> normal key, filed from this console
        self._confirmed: set[str] = set()  # frame ids confirmed defective from this console
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Verdict]]] = set()
        self._lock = threading.Lock()

    # --- written by the reader thread ----------------------------------------------------

    def add(self, verdict: Verdict) -> None:
        """Record a verdict and pass it to every subscribed stream (any thread)."""
        with self._lock:
            line = self._lines.setdefault(verdict.line, LineState())
            replay = verdict.frame_id in line.recent
            line.recent[verdict.frame_id] = verdict
            line.recent.move_to_end(verdict.frame_id)
            while len(line.recent) > self.recent_per_line:
                line.recent.popitem(last=False)
            if not replay:
                if verdict.result == "ng":
                    line.ng += 1
                else:
                    line.ok += 1
            if verdict.result == "ng":
                self._gallery[verdict.frame_id] = verdict
                self._gallery.move_to_end(verdict.frame_id)
                while len(self._gallery) > self.gallery_size:
                    self._gallery.popitem(last=False)
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # that stream's loop has closed
                loop.call_soon_threadsafe(_offer, queue, verdict)

    # --- read by the pages ---------------------------------------------------------------

    def lines(self) -> dict[str, tuple[list[Verdict], int, int]]:
        """Per line (sorted by name): its recent verdicts newest first, OK and NG counts."""
        with self._lock:
            return {
                name: (list(reversed(state.recent.values())), state.ok, state.ng)
                for name, state in sorted(self._lines.items())
            }

    def line(self, name: str) -> tuple[list[Verdict], int, int]:
        """One line's recent verdicts newest first, OK and NG counts (empty if unseen)."""
        with self._lock:
            state = self._lines.get(name) or LineState()
            return list(reversed(state.recent.values())), state.ok, state.ng

    def gallery(self) -> list[Verdict]:
        """Recent NG verdicts, newest first."""
        with self._lock:
            return list(reversed(self._gallery.values()))

    def find(self, frame_id: str) -> Verdict | None:
        """A recent verdict of this frame (gallery first), or None."""
        with self._lock:
            if frame_id in self._gallery:
                return self._gallery[frame_id]
            for state in self._lines.values():
                if frame_id in state.recent:
                    return state.recent[frame_id]
        return None

    def filed(self, frame_id: str) -> str | None:
        """The normal key a frame was filed under from this console, if it was."""
        with self._lock:
            return self._filed.get(frame_id)

    def mark_filed(self, frame_id: str, key: str) -> None:
        with self._lock:
            self._filed[frame_id] = key
            self._confirmed.discard(frame_id)

    def confirmed(self, frame_id: str) -> bool:
        """Whether an operator of this console confirmed the frame's part defective."""
        with self._lock:
            return frame_id in self._confirmed

    def mark_confirmed(self, frame_id: str) -> None:
        with self._lock:
            self._confirmed.add(frame_id)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Verdict]]:
        """A queue receiving every verdict added from now on, until the block ends."""
        entry = (asyncio.get_running_loop(), asyncio.Queue[Verdict](maxsize=SUBSCRIBER_QUEUE))
        with self._lock:
            self._subscribers.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)


def _offer(queue: asyncio.Queue[Verdict], verdict: Verdict) -> None:
    """Put without blocking; a full queue drops its oldest verdict (a stalled browser)."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(verdict)


#: Makes the feed's consumer from its settings (`make_consumer` unless another is given).
ConsumerFactory = Callable[["ConsoleSettings"], "KafkaConsumer"]


def make_consumer(settings: ConsoleSettings) -> KafkaConsumer:
    """A consumer without a group (partitions are assigned by the feed), reading only."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        **security_config(settings),  # TLS / SASL exactly as the workers reach the brokers
        group_id=None,
        enable_auto_commit=False,
        client_id="kenpin-console",
        allow_auto_create_topics=False,
        metadata_max_age_ms=int(settings.topic_refresh_s * 1000),
        request_timeout_ms=30_000,
        # a verdict is small, but other records under the prefix must not break the fetch
        **fetch_options(settings),
    )


class VerdictFeed:
    """The reader thread: verdict topics -> `VerdictHub`; reconnects after broker errors."""

    def __init__(
        self,
        settings: ConsoleSettings,
        hub: VerdictHub,
        consumer_factory: ConsumerFactory = make_consumer,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.consumer_factory = consumer_factory
        # the line's part of the topic name is matched, so a prefix selects lines
        self.pattern = re.compile(
            f"^{re.escape(verdict_topic(settings.line_prefix, settings.verdicts_topic_prefix))}"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> VerdictFeed:
        self._thread = threading.Thread(target=self._run, name="verdict-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        # imported here, in the feed's thread: the pages load without kafka-python (~0.1 s)
        from kafka.errors import KafkaError

        backoff = 1.0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self.consumer_factory(self.settings)
                self._read(consumer)
                backoff = 1.0
            except KafkaError as exc:
                self.hub.feed = FeedState(connected=False, error=f"broker: {exc}")
                log.warning("verdict feed: broker unavailable", error=str(exc), retry_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        consumer.close()

    def _read(self, consumer: KafkaConsumer) -> None:
        assigned: set[TopicPartition] = set()
        next_check = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_check:
                assigned = self._assign_new(consumer, assigned)
                next_check = time.monotonic() + self.settings.topic_refresh_s
            if not assigned:
                self._stop.wait(min(1.0, self.settings.topic_refresh_s))
                continue
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    self._add(record.topic, record.offset, record.value)

    def _assign_new(
        self, consumer: KafkaConsumer, assigned: set[TopicPartition]
    ) -> set[TopicPartition]:
        from kafka import TopicPartition

        topics = sorted(t for t in consumer.topics() if self.pattern.match(t))
        found = {
            TopicPartition(topic, partition)
            for topic in topics
            for partition in consumer.partitions_for_topic(topic) or ()
        }
        self.hub.feed = FeedState(connected=True, error=None, topics=len(topics))
        new = found - assigned
        if not new:
            return assigned
        everything = assigned | found
        consumer.assign(sorted(everything, key=lambda tp: (tp.topic, tp.partition)))
        ends = consumer.end_offsets(list(new))
        starts = consumer.beginning_offsets(list(new))
        for tp in new:
            consumer.seek(tp, max(starts[tp], ends[tp] - self.settings.backfill_per_partition))
        log.info("verdict feed: reading", topics=topics, new_partitions=len(new))
        return everything

    def _add(self, topic: str, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            verdict = Verdict.from_json(value)
        except ValidationError as exc:
            log.warning(
                "verdict feed: unreadable record skipped",
                topic=topic,
                offset=offset,
                error=str(exc).splitlines()[0],
            )
            return
        self.hub.add(verdict)
