"""Frames for integration tests: good ones from image files, and every kind of bad input."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer

from schemas.frames import FrameHeaders, content_type_for_path


@dataclass
class Sent:
    """One produced record and where the broker put it."""

    frame_id: str | None
    topic: str
    partition: int
    offset: int
    kind: str  # "good" or the bad-input kind


def headers_for(
    line: str, product: str, content_type: str = "image/png", camera: str = "cam-1"
) -> list[tuple[str, bytes]]:
    return FrameHeaders(
        frame_id=uuid.uuid4().hex,
        line=line,
        camera=camera,
        product=product,
        capture_time=datetime.now(UTC),
        content_type=content_type,
    ).to_kafka_headers()


def frame_id_of(headers: list[tuple[str, bytes]] | None) -> str | None:
    return next((v.decode() for k, v in headers or [] if k == "kenpin-frame-id"), None)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG header that declares an enormous image (decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_inputs(line: str, product: str, good_png: bytes) -> list[tuple[str, bytes, list | None]]:
    """(kind, value, headers) of each kind of bad input a worker must survive."""
    gif = [
        (k, b"image/gif" if k == "kenpin-content-type" else v)
        for k, v in headers_for(line, product)
    ]
    return [
        ("corrupt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, headers_for(line, product)),
        ("truncated", good_png[: len(good_png) // 2], headers_for(line, product)),
        ("empty", b"", headers_for(line, product)),
        ("unsupported_content_type", good_png, gif),
        ("bomb", png_bomb(), headers_for(line, product)),
        ("missing_headers", good_png, None),
        (
            "invalid_headers",
            good_png,
            [
                (k, b"not-a-time" if k == "kenpin-capture-time" else v)
                for k, v in headers_for(line, product)
            ],
        ),
        ("unknown_product", good_png, headers_for(line, "gizmo")),
        # a camera (broken or hostile) that claims another line than its topic's
        ("line_mismatch", good_png, headers_for(f"{line}-other", product)),
    ]


def produce_frames(
    producer: KafkaProducer, topic: str, line: str, images: list[tuple[Path, str]], bad: bool = True
) -> list[Sent]:
    """Produce each (image, product) as a frame, then the bad inputs; returns where each went."""
    pending = []
    for path, product in images:
        headers = headers_for(line, product, content_type_for_path(path))
        future = producer.send(topic, key=b"cam-1", value=path.read_bytes(), headers=headers)
        pending.append((frame_id_of(headers), "good", future))
    if bad:
        good_png = images[0][0].read_bytes()
        for kind, value, headers in bad_inputs(line, images[0][1], good_png):
            future = producer.send(topic, key=b"cam-1", value=value, headers=headers or [])
            pending.append((frame_id_of(headers), kind, future))
    producer.flush(timeout=30)
    sent = []
    for frame_id, kind, future in pending:
        meta = future.get(timeout=30)
        sent.append(Sent(frame_id, meta.topic, meta.partition, meta.offset, kind))
    return sent
