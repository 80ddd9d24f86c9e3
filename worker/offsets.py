"""Which offset each partition may commit: up to, not including, its oldest frame still pending.

At least once means a frame's offset is committed only after all its outputs are
done: the verdict (or dead letter) acknowledged by the broker and, for an NG
part, the heatmap stored. Outputs finish out of order and some wait long (a
heatmap during an S3 outage), so progress is kept per partition: a frame whose
heatmap waits holds back its own partition only, never another line's.

Frames are held in offset order when they are polled, before they are judged
(`hold`), so the loop may judge them out of order (frames still in time before
frames whose deadline has passed) without a commit ever passing an unjudged one.

A Kafka send that failed (the broker was away longer than the producer's
delivery timeout) is sent again by the loop, not given up: the frame's commit
simply waits for the new send. `Output` holds what is needed for that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from kafka.structs import TopicPartition


@dataclass
class Output:
    """One thing a frame's commit waits for; `resend` (if any) starts it again after a failure."""

    future: Future
    resend: Callable[[], Future] | None = None
    operation: str = "heatmap"  # metric label: verdict, dead_letter, heatmap
    attempts: int = 1

    def failed(self) -> BaseException | None:
        """The failure of a finished output, None while it runs or when it succeeded."""
        if not self.future.done():
            return None
        if self.future.cancelled():
            return CancelledError()
        return self.future.exception()

    def done(self) -> bool:
        return self.future.done() and self.future.exception() is None


@dataclass
class Held:
    """A frame's place in its partition: committed past only once judged and done."""

    offset: int
    outputs: list[Output] = field(default_factory=list)
    judged: bool = True

    def judged_with(self, outputs: Iterable[Output]) -> None:
        """The frame was judged: its commit now waits for these outputs."""
        self.outputs = list(outputs)
        self.judged = True

    def done(self) -> bool:
        return self.judged and all(o.done() for o in self.outputs)


class OffsetTracker:
    """Frames handed to the loop per partition, in offset order, until their outputs are done."""

    def __init__(self) -> None:
        self._frames: dict[TopicPartition, deque[Held]] = {}
        self._next: dict[TopicPartition, int] = {}  # last offset handed in + 1
        self._first: dict[TopicPartition, int] = {}  # nothing below it is ours to commit

    def hold(self, tp: TopicPartition, offset: int) -> Held:
        """Track a frame of `tp` not judged yet (in offset order); nothing from it on is
        committed until `Held.judged_with` and its outputs are done."""
        held = Held(offset, judged=False)
        self._frames.setdefault(tp, deque()).append(held)
        self._first.setdefault(tp, offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)
        return held

    def failed_outputs(self) -> list[Output]:
        """Every output that finished with an error (to be sent again, or to give up on)."""
        return [
            output
            for frames in self._frames.values()
            for frame in frames
            for output in frame.outputs
            if output.failed() is not None
        ]

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit now: the oldest pending frame's, or the next one.

        A partition none of whose frames is done yet is left out. Frames whose
        outputs are all done are dropped as a side effect.
        """
        offsets: dict[TopicPartition, int] = {}
        for tp, frames in self._frames.items():
            while frames and frames[0].done():
                frames.popleft()
            offset = frames[0].offset if frames else self._next[tp]
            if offset > self._first[tp]:
                offsets[tp] = offset
        return offsets

    def pending(self) -> int:
        """Judged frames whose outputs are not all done yet (held ones are the loop's queue)."""
        return sum(
            1 for frames in self._frames.values() for f in frames if f.judged and not f.done()
        )

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop tracking partitions this worker no longer owns (their new owner judges again)."""
        for tp in partitions:
            self._frames.pop(tp, None)
            self._next.pop(tp, None)
            self._first.pop(tp, None)

    def clear(self) -> None:
        self._frames.clear()
        self._next.clear()
        self._first.clear()

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self._frames)
