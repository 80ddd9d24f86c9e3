"""A camera simulator: streams a folder of images onto a line's frame topic, at a given rate.

Real cameras are not available in development, CI or demos; this replays
image files (e.g. an MVTec AD test set) exactly as a camera would send them:
the original file bytes as the value, the camera id as the key and the frame
headers of the contract. It returns which file became which frame id, so a
test can match every verdict to its ground truth.

Like a camera triggered by a PLC, it can number its captures (`sequence_start`:
the `kenpin-sequence` header counts up from there) and name the part of each
(`part_id_prefix`: the `kenpin-part-id` header is the prefix and that number),
so a demo or a test can follow a part from the trigger to the PLC's verdict.

    kenpin-worker camera --line l1 --fps 10 --source data/mvtec/bottle/test
    kenpin-worker camera --line l1 --source DIR --part-id-prefix L1-P --sequence-start 1
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from schemas.common import utc_now
from schemas.frames import CONTENT_TYPE_BY_EXTENSION, FrameHeaders, content_type_for_path
from schemas.topics import FRAMES_TOPIC_PREFIX, frames_topic, parts_topic

# MVTec AD layout: <product>/{train,test}/<defect>/x.png, plus defect masks under
# <product>/ground_truth/, which are annotations, not camera frames.
_SPLIT_FOLDERS = ("train", "test")
_MASK_FOLDER = "ground_truth"


class SendFuture(Protocol):
    def get(self, timeout: float | None = None) -> object: ...


class Producer(Protocol):
    """What the simulator needs of a KafkaProducer (tests pass an in-process fake)."""

    def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> SendFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...


class SentFrame(NamedTuple):
    """One frame put on Kafka, the file it came from and the part identity it carried."""

    frame_id: str
    source: Path
    part_id: str | None = None
    sequence: int | None = None


def list_images(source_dir: Path) -> list[Path]:
    """JPEG and PNG files under `source_dir`, recursively, sorted; MVTec masks are skipped."""
    root = Path(source_dir)
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix.lower() in CONTENT_TYPE_BY_EXTENSION
        and _MASK_FOLDER not in path.relative_to(root).parts
    )


def infer_product(path: Path) -> str:
    """The product of an MVTec-style path `.../<product>/test/<defect>/x.png`.

    Raises ValueError when the path has no train/test folder to anchor on.
    """
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] in _SPLIT_FOLDERS:
            return parts[i - 1]
    raise ValueError(f"cannot infer the product from {path}; pass product= explicitly")


def stream_folder(
    producer: Producer,
    line: str,
    source_dir: Path | str,
    fps: float,
    count: int | None = None,
    product: str | None = None,
    camera: str = "cam-1",
    *,
    part_id_prefix: str | None = None,
    sequence_start: int | None = None,
    announce: bool = False,
    topic_prefix: str = FRAMES_TOPIC_PREFIX,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SentFrame]:
    """Send the images of `source_dir` as frames of `camera` on `line`, `fps` per second.

    `count=None` sends every image once; a larger count cycles through them
    again (a longer load test from a small folder). `fps <= 0` sends as fast as
    the producer accepts. Pacing follows a fixed schedule (frame i at i/fps),
    so slow sends do not accumulate drift. Flushes before returning and raises
    if any send failed.

    `sequence_start` numbers the captures from that value (the `kenpin-sequence`
    header); `part_id_prefix` names each part prefix + its number (the
    `kenpin-part-id` header; numbered from `sequence_start`, or from 1). Neither
    given: frames without part identity, as a camera without a PLC trigger sends.

    `announce`: each frame's headers also go to the line's parts topic
    (`kenpin.parts.<line>`, no value), where the PLC bridge learns of the part without
    fetching its image.
    """
    images = list_images(Path(source_dir))
    if not images:
        raise ValueError(f"no .png/.jpg images under {source_dir}")
    topic = frames_topic(line, topic_prefix)
    parts = parts_topic(line)
    parts = parts_topic(line)
    key = camera.encode()
    total = len(images) if count is None else count

    sent: list[SentFrame] = []
    futures = []
    start = clock()
    for i, path in enumerate(_cycle(images, total)):
        if fps > 0:
            delay = start + i / fps - clock()
            if delay > 0:
                sleep(delay)
        number = (1 if sequence_start is None else sequence_start) + i
        headers = FrameHeaders(
            frame_id=str(uuid.uuid4()),
            part_id=None if part_id_prefix is None else f"{part_id_prefix}{number}",
            sequence=None if sequence_start is None else number,
            line=line,
            camera=camera,
            product=product or infer_product(path),
            capture_time=utc_now(),
            content_type=content_type_for_path(path),
        )
        kafka_headers = headers.to_kafka_headers()
        futures.append(
            producer.send(topic, value=path.read_bytes(), key=key, headers=kafka_headers)
        )
        if announce:
            futures.append(producer.send(parts, value=b"", key=key, headers=kafka_headers))
        sent.append(SentFrame(headers.frame_id, path, headers.part_id, headers.sequence))
    producer.flush()
    for future in futures:
        # flush() has resolved every future; get() re-raises a send that failed.
        future.get(timeout=10)
    return sent


def _cycle(images: list[Path], total: int) -> Iterator[Path]:
    return itertools.islice(itertools.cycle(images), max(total, 0))
