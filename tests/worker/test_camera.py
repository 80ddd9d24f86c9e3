"""The camera simulator against an in-process fake producer and a tiny MVTec-style folder."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.frames import FrameHeaders
from worker.camera import infer_product, list_images, stream_folder


class FakeFuture:
    def __init__(self, error: Exception | None = None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error
        return "metadata"


class FakeProducer:
    def __init__(self, fail: bool = False):
        self.sent: list[dict] = []
        self.flushed = False
        self.fail = fail

    def send(self, topic, value=None, key=None, headers=None):
        assert not self.flushed, "sent after flush"
        self.sent.append(dict(topic=topic, value=value, key=key, headers=headers))
        return FakeFuture(RuntimeError("broker said no") if self.fail else None)

    def flush(self, timeout=None):
        self.flushed = True


class FakeClock:
    """Time that only moves when the simulator sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    """<root>/bottle/test/{good,broken_large}/*.png|jpg plus ground_truth masks."""
    image = np.full((8, 8, 3), 200, np.uint8)
    files = [
        "bottle/test/good/000.png",
        "bottle/test/broken_large/000.png",
        "bottle/test/broken_large/001.jpg",
        "bottle/ground_truth/broken_large/000_mask.png",
    ]
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
    (tmp_path / "bottle" / "readme.txt").write_text("not an image")
    return tmp_path


def test_lists_images_sorted_without_masks(mvtec):
    names = [p.relative_to(mvtec).as_posix() for p in list_images(mvtec)]
    assert names == [
        "bottle/test/broken_large/000.png",
        "bottle/test/broken_large/001.jpg",
        "bottle/test/good/000.png",
    ]


def test_streams_every_image_as_a_frame(mvtec):
    producer, clock = FakeProducer(), FakeClock()
    sent = stream_folder(producer, "l1", mvtec, fps=0, clock=clock, sleep=clock.sleep)
    assert producer.flushed
    assert [s.source for s in sent] == list_images(mvtec)
    assert len({s.frame_id for s in sent}) == 3
    for frame, record in zip(sent, producer.sent, strict=True):
        assert record["topic"] == "kenpin.frames.l1"
        assert record["key"] == b"cam-1"
        assert record["value"] == frame.source.read_bytes()  # original bytes, no re-encoding
        headers = FrameHeaders.from_kafka_headers(record["headers"])
        assert headers.frame_id == frame.frame_id
        assert (headers.line, headers.camera, headers.product) == ("l1", "cam-1", "bottle")
        expected = "image/jpeg" if frame.source.suffix == ".jpg" else "image/png"
        assert headers.content_type == expected
    assert clock.sleeps == []


def test_paces_at_fps_on_a_fixed_schedule(mvtec):
    producer, clock = FakeProducer(), FakeClock()
    stream_folder(producer, "l1", mvtec, fps=4, count=5, clock=clock, sleep=clock.sleep)
    assert len(producer.sent) == 5
    assert clock.sleeps == pytest.approx([0.25] * 4)
    assert clock.now == pytest.approx(101.0)


def test_count_cycles_and_truncates(mvtec):
    producer = FakeProducer()
    sent = stream_folder(producer, "l1", mvtec, fps=0, count=4)
    images = list_images(mvtec)
    assert [s.source for s in sent] == [*images, images[0]]
    assert len({s.frame_id for s in sent}) == 4
    assert len(stream_folder(FakeProducer(), "l1", mvtec, fps=0, count=1)) == 1


def test_explicit_product_and_camera(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    producer = FakeProducer()
    stream_folder(producer, "l2", tmp_path, fps=0, product="screw", camera="cam-9")
    headers = FrameHeaders.from_kafka_headers(producer.sent[0]["headers"])
    assert (headers.product, headers.camera, producer.sent[0]["key"]) == (
        "screw",
        "cam-9",
        b"cam-9",
    )


def test_product_must_be_inferable_or_given(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="product"):
        stream_folder(FakeProducer(), "l1", tmp_path, fps=0)


def test_infer_product():
    assert infer_product(Path("/data/mvtec/metal_nut/test/color/000.png")) == "metal_nut"
    assert infer_product(Path("bottle/train/good/001.png")) == "bottle"


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no .png/.jpg"):
        stream_folder(FakeProducer(), "l1", tmp_path, fps=0)


def test_failed_send_is_raised_after_flush(mvtec):
    producer = FakeProducer(fail=True)
    with pytest.raises(RuntimeError, match="broker said no"):
        stream_folder(producer, "l1", mvtec, fps=0)
    assert producer.flushed


def test_part_ids_and_sequence_numbers_like_a_plc_trigger(mvtec):
    producer = FakeProducer()
    sent = stream_folder(
        producer, "l1", mvtec, fps=0, count=4, part_id_prefix="L1-P", sequence_start=100
    )
    parsed = [FrameHeaders.from_kafka_headers(r["headers"]) for r in producer.sent]
    assert [(h.part_id, h.sequence) for h in parsed] == [
        ("L1-P100", 100),
        ("L1-P101", 101),
        ("L1-P102", 102),
        ("L1-P103", 103),
    ]
    assert [(s.part_id, s.sequence) for s in sent] == [(h.part_id, h.sequence) for h in parsed]
    plain = FakeProducer()
    stream_folder(plain, "l1", mvtec, fps=0, count=1)
    names = [name for name, _ in plain.sent[0]["headers"]]
    assert "kenpin-part-id" not in names and "kenpin-sequence" not in names


def test_announced_parts_carry_the_frames_headers_and_no_image(mvtec):
    producer = FakeProducer()
    sent = stream_folder(producer, "l1", mvtec, fps=0, announce=True, part_id_prefix="P-")
    frames = [s for s in producer.sent if s["topic"] == "kenpin.frames.l1"]
    parts = [s for s in producer.sent if s["topic"] == "kenpin.parts.l1"]
    assert len(frames) == len(parts) == len(sent)
    for frame, part in zip(frames, parts, strict=True):
        assert part["headers"] == frame["headers"] and part["key"] == frame["key"]
        assert part["value"] == b"" and frame["value"]
    plain = FakeProducer()
    stream_folder(plain, "l1", mvtec, fps=0)
    assert {s["topic"] for s in plain.sent} == {"kenpin.frames.l1"}  # only when asked
