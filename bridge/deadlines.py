"""One outcome per part, in time: the deadline tracker and the de-duplication of replays.

Pure logic, no I/O: the Kafka side feeds it events stamped with the bridge's
monotonic clock, the OPC UA and MQTT side publishes what it returns.

- A frame seen starts its part's deadline (the line's setting). A verdict or a
  dead letter before the deadline is published as OK / NG / REJECTED_INPUT; at
  the deadline, TIMEOUT is.
- Every decided part is remembered by frame id (a bounded LRU): a verdict
  replayed after a worker crash, or a frame read again, publishes nothing and is
  counted as a duplicate; a verdict arriving after its part's TIMEOUT is counted
  as late and publishes nothing either. The PLC has acted on TIMEOUT: a second,
  different answer for the same part would arrive when the part is gone, and
  would take the sequence slot of the part the PLC is handling now.
- The deadline runs from the part's capture time (`from_capture`, the default
  of the bridge's settings): TIMEOUT is due at capture + the line's deadline,
  however late the bridge reads the frame, and a verdict that comes after that
  is a TIMEOUT too (counted late), never an OK for a part the PLC has already
  rejected. The camera's and the bridge's clocks must be synchronised (NTP/PTP)
  for this; a capture time ahead of the bridge's clock is counted
  (`clock_ahead`) and the deadline then starts when the frame is seen. Without
  synchronised clocks the deadline runs from when the bridge saw the frame, on
  its monotonic clock (`from_capture=False`), and the PLC's own watchdog covers
  the way from camera to bridge (docs/plc-integration.md).
- Parts captured more than one deadline before the bridge started (`started`)
  are not decided at all (counted `stale`): a restarted bridge reads on from
  each topic's end, and whatever the broker hands out again from before the
  restart names parts that are gone; an outcome for them now would take the
  sequence slot of the part at the station.
- A frame whose headers do not parse has no trustworthy frame id: it is tracked
  by where it lies on the broker (topic/partition/offset), which its dead letter
  names too, so REJECTED_INPUT still ends its deadline.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bridge.outcome import Decision, Outcome
from schemas.common import utc_now
from schemas.deadletters import DeadLetter
from schemas.verdicts import Verdict

#: Sequence numbers and counters are OPC UA UInt32 (a PLC UDINT): they wrap to 1 / 0.
UINT32_WRAP = 2**32


def coordinates(topic: str, partition: int, offset: int) -> str:
    """Where a record lies on the broker: the key of a frame without a usable frame id."""
    return f"{topic}/{partition}/{offset}"


@dataclass(frozen=True)
class FrameSeen:
    """A frame record read from a line's frame topic (its headers; the image is ignored)."""

    line: str
    where: str  # coordinates(...)
    seen_at: float  # monotonic seconds
    frame_id: str | None = None  # None: the headers did not parse
    part_id: str | None = None
    capture_sequence: int | None = None
    camera: str | None = None
    product: str | None = None
    capture_time: datetime | None = None


@dataclass(frozen=True)
class VerdictArrived:
    line: str  # the verdict topic's line
    verdict: Verdict
    seen_at: float


@dataclass(frozen=True)
class DeadLetterArrived:
    line: str  # the line of the dead letter's source topic
    letter: DeadLetter
    seen_at: float


Event = FrameSeen | VerdictArrived | DeadLetterArrived


@dataclass
class LineState:
    """What the PLC reads of one line besides the last outcome: its counters and sequence."""

    line: str
    sequence: int = 0  # 0: nothing published since the bridge started
    ok: int = 0
    ng: int = 0
    timeout: int = 0
    rejected: int = 0
    late: int = 0  # verdicts / dead letters after their part's TIMEOUT
    duplicate: int = 0  # replays of a part already decided
    stale: int = 0  # frames and verdicts of parts captured before the bridge started
    clock_ahead: int = 0  # capture times ahead of the bridge's clock
    unseen: int = 0  # verdicts of parts whose frame or announcement the bridge never read
    frame_lag_ms: float | None = None  # capture -> the bridge reading the frame, latest frame
    last: Outcome | None = None

    def count(self, decision: Decision) -> None:
        name = {"OK": "ok", "NG": "ng", "TIMEOUT": "timeout", "REJECTED_INPUT": "rejected"}
        attr = name[decision]
        setattr(self, attr, (getattr(self, attr) + 1) % UINT32_WRAP)

    def next_sequence(self) -> int:
        # 1 .. 2**32 - 1, then 1 again: 0 keeps meaning "nothing yet".
        self.sequence = self.sequence % (UINT32_WRAP - 1) + 1
        return self.sequence


@dataclass
class _Pending:
    frame: FrameSeen
    due: float


class _Lru(OrderedDict):
    """A dict that forgets its oldest entries beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, key: str, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


@dataclass
class DeadlineTracker:
    """Turns frames, verdicts and dead letters into one outcome per part (see module doc)."""

    deadline_s: Callable[[str], float]
    capacity: int = 100_000
    wall_clock: Callable[[], datetime] = utc_now
    from_capture: bool = False  # deadlines from capture times (see the module doc)
    started: datetime | None = None  # None: now; parts captured a deadline before are stale
    lines: dict[str, LineState] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # lines whose state moved since take_changed

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.wall_clock()
        self._pending: dict[str, _Pending] = {}
        self._due: list[tuple[float, int, str]] = []  # heap; stale entries skipped on pop
        self._pushed = 0
        self._decided: _Lru = _Lru(self.capacity)  # key -> the decision published
        self._aliases: _Lru = _Lru(self.capacity)  # coordinates -> frame id

    # --- the state the outputs read -------------------------------------------------

    def line(self, name: str) -> LineState:
        state = self.lines.get(name)
        if state is None:
            state = self.lines[name] = LineState(name)
            self.changed.add(name)
        return state

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    def next_due(self) -> float | None:
        """Monotonic time of the earliest pending deadline, None when nothing is pending."""
        while self._due and self._due[0][2] not in self._pending:
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- events ----------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Outcome]:
        """Outcomes `event` decides (none, or one), at monotonic time `now`."""
        if isinstance(event, FrameSeen):
            self._frame_seen(event, now)
            return []
        if isinstance(event, VerdictArrived):
            key = event.verdict.frame_id
            if self._stale(event.line, key, event.verdict.capture_time):
                return []
            return self._decided_by(event.line, key, event, now)
        letter = event.letter
        where = coordinates(letter.source_topic, letter.source_partition, letter.source_offset)
        key = letter.frame_id or self._aliases.get(where) or where
        if key not in self._pending and self._stale(event.line, key, letter.time):
            return []  # its frame is not waiting, and it was dead-lettered before we started
        return self._decided_by(event.line, key, event, now)

    def expire(self, now: float) -> list[Outcome]:
        """TIMEOUT for every pending part whose deadline has passed at `now`."""
        outcomes = []
        while (due := self.next_due()) is not None and due <= now:
            _, _, key = heapq.heappop(self._due)
            pending = self._pending.pop(key)
            frame = pending.frame
            outcomes.append(
                self._publish(
                    frame.line,
                    key,
                    "TIMEOUT",
                    now,
                    pending,
                    frame_id=frame.frame_id,
                    part_id=frame.part_id,
                    capture_sequence=frame.capture_sequence,
                    camera=frame.camera,
                    product=frame.product,
                    capture_time=frame.capture_time,
                    reason="deadline",
                )
            )
        return outcomes

    # --- inside ------------------------------------------------------------------------

    def _stale(self, line: str, key: str, when: datetime | None) -> bool:
        """Whether a part of `when` was captured (or dead-lettered) a deadline before the start;
        such a part is remembered as decided, so nothing of it is published later either."""
        if not self.from_capture or when is None or key in self._decided:
            return False
        assert self.started is not None
        if (self.started - when).total_seconds() <= self.deadline_s(line):
            return False
        state = self.line(line)
        state.stale = (state.stale + 1) % UINT32_WRAP
        self._pending.pop(key, None)
        self._decided.remember(key, "STALE")
        self.changed.add(line)
        return True

    def _frame_seen(self, frame: FrameSeen, now: float) -> None:
        state = self.line(frame.line)
        key = frame.frame_id or frame.where
        if frame.frame_id:
            self._aliases.remember(frame.where, frame.frame_id)
        if key in self._decided or key in self._pending:
            return  # decided already (its verdict came first) or read again: no new deadline
        if self._stale(frame.line, key, frame.capture_time):
            return
        started = frame.seen_at  # the deadline's start, on the monotonic clock
        if self.from_capture and frame.capture_time is not None:
            # the frame's age when it was read: now's wall clock, less the time since the read
            age = (self.wall_clock() - frame.capture_time).total_seconds() - (now - frame.seen_at)
            if age < 0:
                state.clock_ahead = (state.clock_ahead + 1) % UINT32_WRAP
                age = 0.0
            state.frame_lag_ms = age * 1000.0
            self.changed.add(frame.line)
            started = frame.seen_at - age
        due = started + self.deadline_s(frame.line)
        self._pending[key] = _Pending(frame, due)
        self._pushed += 1
        heapq.heappush(self._due, (due, self._pushed, key))

    def _decided_by(
        self, line: str, key: str, event: VerdictArrived | DeadLetterArrived, now: float
    ) -> list[Outcome]:
        state = self.line(line)
        earlier = self._decided.get(key)
        if earlier is not None:
            if earlier == "STALE":
                state.stale = (state.stale + 1) % UINT32_WRAP
            elif earlier == "TIMEOUT":
                state.late = (state.late + 1) % UINT32_WRAP
            else:
                state.duplicate = (state.duplicate + 1) % UINT32_WRAP
            self.changed.add(line)
            return []
        pending = self._pending.pop(key, None)  # its heap entry is skipped later
        frame = pending.frame if pending else None
        if isinstance(event, VerdictArrived):
            v = event.verdict
            if pending is None:
                # a frame is written before its verdict, so its part was never read: a camera
                # that does not announce on a line read from its parts topic. Such parts get
                # no TIMEOUT; the count says so.
                state.unseen = (state.unseen + 1) % UINT32_WRAP
                self.changed.add(line)
            if self._overdue(line, pending, v.capture_time, now):
                # the part's deadline passed before its verdict came: the PLC has rejected it
                state.late = (state.late + 1) % UINT32_WRAP
                return [
                    self._publish(
                        line,
                        key,
                        "TIMEOUT",
                        now,
                        pending,
                        frame_id=v.frame_id,
                        part_id=v.part_id,
                        capture_sequence=v.sequence,
                        camera=v.camera,
                        product=v.product,
                        capture_time=v.capture_time,
                        reason="deadline",
                    )
                ]
            return [
                self._publish(
                    line,
                    key,
                    "OK" if v.result == "ok" else "NG",
                    now,
                    pending,
                    frame_id=v.frame_id,
                    part_id=v.part_id,
                    capture_sequence=v.sequence,
                    camera=v.camera,
                    product=v.product,
                    capture_time=v.capture_time,
                    score=v.score,
                    threshold=v.threshold,
                    model_version=v.model_version,
                    heatmap_key=v.heatmap_key,
                )
            ]
        d = event.letter
        return [
            self._publish(
                line,
                key,
                "REJECTED_INPUT",
                now,
                pending,
                frame_id=d.frame_id or (frame.frame_id if frame else None),
                part_id=d.part_id if d.part_id is not None else (frame and frame.part_id),
                capture_sequence=d.sequence
                if d.sequence is not None
                else (frame and frame.capture_sequence),
                camera=frame.camera if frame else None,
                product=frame.product if frame else None,
                capture_time=frame.capture_time if frame else None,
                reason=d.reason.value,
            )
        ]

    def _overdue(
        self, line: str, pending: _Pending | None, capture: datetime | None, now: float
    ) -> bool:
        """A decision that comes after the part's deadline: its frame's, or (frame not seen)
        capture + deadline on the wall clock."""
        if pending is not None:
            return pending.due <= now
        if not self.from_capture or capture is None:
            return False
        return (self.wall_clock() - capture).total_seconds() > self.deadline_s(line)

    def _publish(
        self,
        line: str,
        key: str,
        decision: Decision,
        now: float,
        pending: _Pending | None,
        **fields: object,
    ) -> Outcome:
        state = self.line(line)
        outcome = Outcome(
            line=line,
            sequence=state.next_sequence(),
            verdict=decision,
            published_time=self.wall_clock(),
            waited_ms=self._waited_ms(pending, fields.get("capture_time"), now),
            deadline_ms=self.deadline_s(line) * 1000.0,
            **fields,
        )
        state.count(decision)
        state.last = outcome
        self._decided.remember(key, decision)
        self.changed.add(line)
        return outcome

    def _waited_ms(self, pending: _Pending | None, capture: object, now: float) -> float | None:
        """From capture (deadlines from capture times) or from the frame seen, to now."""
        if self.from_capture and isinstance(capture, datetime):
            return max(0.0, (self.wall_clock() - capture).total_seconds() * 1000.0)
        return (now - pending.frame.seen_at) * 1000.0 if pending else None
