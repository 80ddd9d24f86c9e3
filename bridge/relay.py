"""The bridge's loop: Kafka events in, outcomes out to OPC UA and MQTT, TIMEOUTs on time.

One asyncio loop owns the tracker and the OPC UA server; the Kafka reader runs
in its own thread (kafka-python blocks) and hands it batches of events. The
loop sleeps until the next event or the earliest pending deadline, whichever
comes first, so a TIMEOUT is published when it is due, not on the next tick.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bridge.deadlines import DeadlineTracker, Event
from bridge.kafka_source import KafkaSource
from bridge.mqtt_output import MqttOutput
from bridge.opcua_server import PlcServer
from bridge.outcome import Outcome
from bridge.settings import BridgeSettings
from planes.logs import get_logger

log = get_logger(__name__)

HEARTBEAT_S = 1.0
#: How often a line whose frames reach the bridge later than its deadline is logged.
BEHIND_LOG_S = 10.0
_STOP = object()


class Relay:
    """Runs until `stop()`: the OPC UA server (optional), MQTT (optional), the Kafka reader."""

    def __init__(self, settings: BridgeSettings, *, opcua: bool = True) -> None:
        self.settings = settings
        self.tracker = DeadlineTracker(
            settings.deadline_s,
            settings.dedup_frames,
            from_capture=settings.deadline_from == "capture",
        )
        self.plc = PlcServer(settings) if opcua else None
        self.mqtt = MqttOutput(settings) if settings.mqtt_url else None
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._behind_logged: dict[str, float] = {}
        self._unseen_logged: dict[str, tuple[float, int]] = {}  # line -> (when, count then)

    def stop(self) -> None:
        """Thread-safe: ends `run()` after the batch in hand."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, _STOP)

    def _from_kafka(self, item: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        for line in self.settings.lines:
            self.tracker.line(line)
        if self.plc is not None:
            await self.plc.start()
        if self.mqtt is not None:
            self.mqtt.start()
        source = KafkaSource(
            self.settings,
            deliver=self._from_kafka,
            on_partitions=lambda count, lines: self._from_kafka(("partitions", count, lines)),
        )
        reader = threading.Thread(target=source.run, name="kafka-reader", daemon=True)
        reader.start()
        log.info(
            "bridge started",
            deadline_ms=self.settings.deadline_ms,
            deadline_from=self.settings.deadline_from,
        )
        next_beat = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_S
                    if self.plc is not None:
                        await self.plc.beat()
                due = self.tracker.next_due()
                wake = min(next_beat, due) if due is not None else next_beat
                items = await self._next_items(max(0.0, wake - time.monotonic()))
                if _STOP in items:
                    break
                await self._handle(items)
        finally:
            source.stop()
            reader.join(timeout=10)
            if self.mqtt is not None:
                self.mqtt.close()
            if self.plc is not None:
                await self.plc.stop()
            log.info("bridge stopped")

    def _say_if_behind(self, states: list) -> None:
        """A warning (at most every BEHIND_LOG_S per line) while frames reach the bridge after
        their deadline: their parts get TIMEOUT however soon they are judged."""
        now = time.monotonic()
        for state in states:
            lag, deadline_ms = state.frame_lag_ms, self.settings.deadline_s(state.line) * 1000
            if lag is None or lag <= deadline_ms:
                continue
            if now - self._behind_logged.get(state.line, -BEHIND_LOG_S) >= BEHIND_LOG_S:
                self._behind_logged[state.line] = now
                log.warning(
                    "frames reach the bridge after their deadline",
                    line=state.line,
                    frame_lag_ms=round(lag, 1),
                    deadline_ms=deadline_ms,
                )

    def _say_if_unseen(self, states: list) -> None:
        """A warning (at most every BEHIND_LOG_S per line) while verdicts come for parts the
        bridge never read: a camera that does not announce where the line is read from."""
        now = time.monotonic()
        for state in states:
            when, then = self._unseen_logged.get(state.line, (-BEHIND_LOG_S, 0))
            if state.unseen == then or now - when < BEHIND_LOG_S:
                continue
            self._unseen_logged[state.line] = (now, state.unseen)
            log.warning(
                "verdicts for parts the bridge never read: no TIMEOUT guarded them",
                line=state.line,
                unseen=state.unseen,
                hint="every camera of a line with a parts topic must announce its parts there",
            )

    async def _next_items(self, timeout: float) -> list[Any]:
        """What the reader delivered by `timeout` seconds from now: all of it, or nothing."""
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return []
        items = [first]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def _handle(self, items: list[Any]) -> None:
        outcomes: list[Outcome] = []
        for item in items:
            if isinstance(item, tuple):  # ("partitions", count, lines)
                _, count, lines = item
                for line in lines:
                    self.tracker.line(line)
                if self.plc is not None:
                    await self.plc.partitions(count)
                continue
            events: list[Event] = item
            for event in events:
                outcomes += self.tracker.handle(event, time.monotonic())
        outcomes += self.tracker.expire(time.monotonic())
        changed = [self.tracker.lines[line] for line in sorted(self.tracker.take_changed())]
        self._say_if_behind(changed)
        self._say_if_unseen(changed)
        if self.plc is not None:
            await self.plc.publish(outcomes, changed)
        if self.mqtt is not None:
            self.mqtt.publish(outcomes)
        for outcome in outcomes:
            log.debug(
                "outcome",
                line=outcome.line,
                sequence=outcome.sequence,
                verdict=outcome.verdict,
                part_id=outcome.part_id,
                waited_ms=outcome.waited_ms,
            )
