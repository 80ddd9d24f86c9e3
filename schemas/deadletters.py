"""The dead-letter contract: a frame the worker could not judge, kept whole for a human or a replay.

Bad input must never stop a line, and must never vanish either: the worker
publishes a DeadLetter to `kenpin.deadletter` and moves on. The record keeps the
original key, headers and bytes and where they came from, so an operator can
see what a camera sent and re-publish it once the cause is fixed.

The Kafka value is this model as JSON; bytes are standard base64 text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Base64Bytes, UtcDatetime, utc_now

#: Version 2 added part_id and sequence (null when the frame did not carry them).
DEAD_LETTER_SCHEMA_VERSION = 2


class DeadLetterReason(StrEnum):
    """Why a frame became a dead letter; stable codes for dashboards and alerts."""

    EMPTY_PAYLOAD = "empty_payload"
    """The record value is empty or null."""
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    """Declared content type is not image/jpeg or image/png."""
    IMAGE_TOO_LARGE = "image_too_large"
    """Declared width x height exceeds the worker's limit (decompression-bomb guard)."""
    CORRUPT_IMAGE = "corrupt_image"
    """The bytes are not a decodable image of the declared type."""
    TRUNCATED_IMAGE = "truncated_image"
    """The image stops before its end marker (PNG IEND, JPEG EOI)."""
    MISSING_HEADERS = "missing_headers"
    """Required frame headers are absent."""
    INVALID_HEADERS = "invalid_headers"
    """Frame headers are present but malformed or inconsistent."""
    LINE_MISMATCH = "line_mismatch"
    """The frame's line header names another line than the topic it was read from."""
    UNKNOWN_PRODUCT = "unknown_product"
    """The current model release has no threshold for this product."""
    PROCESSING_ERROR = "processing_error"
    """An unexpected error while judging this frame (a bug, not bad input)."""


class DeadLetterHeader(BaseModel):
    """One original Kafka header; its value stays bytes because a broken camera may send any."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    key: str
    value: Base64Bytes | None = None


class DeadLetter(BaseModel):
    """A frame that yielded no verdict, with the reason and everything needed to replay it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
    )

    reason: DeadLetterReason = Field(description="Stable code of the failure.")
    detail: str = Field(description="Human-readable explanation, e.g. the decoder's message.")
    source_topic: str = Field(description="Topic the frame was read from.")
    source_partition: int = Field(ge=0, description="Partition the frame was read from.")
    source_offset: int = Field(ge=0, description="Offset of the frame in that partition.")
    original_key: Base64Bytes | None = Field(default=None, description="Record key (camera id).")
    original_headers: list[DeadLetterHeader] = Field(
        default_factory=list, description="Record headers, in their original order."
    )
    original_value: Base64Bytes = Field(
        description="Record value: the image bytes, cut to the first bytes if truncated."
    )
    original_size: int = Field(ge=0, description="Length of the original value in bytes.")
    original_truncated: bool = Field(
        default=False,
        description="True when original_value holds only a prefix (the record was too big "
        "to forward whole within the broker's message size limit).",
    )
    frame_id: str | None = Field(default=None, description="Frame id, when the headers had one.")
    part_id: str | None = Field(
        default=None,
        description="The PLC's part / trigger id from the kenpin-part-id header, unchanged; "
        "null when the frame had none or it was not printable ASCII of 1 to 128 characters.",
    )
    sequence: int | None = Field(
        default=None,
        ge=0,
        description="The capture sequence number from the kenpin-sequence header, unchanged; "
        "null when the frame had none or it was not a decimal number.",
    )
    time: UtcDatetime = Field(description="When the worker dead-lettered the frame (UTC).")
    schema_version: Literal[1, 2] = Field(
        default=DEAD_LETTER_SCHEMA_VERSION,
        description="2 added part_id and sequence; a version 1 dead letter has neither.",
    )

    @classmethod
    def from_record(
        cls,
        *,
        reason: DeadLetterReason,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]] | None,
        frame_id: str | None = None,
        part_id: str | None = None,
        sequence: int | None = None,
        max_value_bytes: int | None = None,
        time: datetime | None = None,
    ) -> Self:
        """Build a dead letter from the parts of a consumed Kafka record.

        `max_value_bytes` keeps the dead letter under the broker's message size
        limit: base64 grows the bytes by a third, so a frame that fit may not.
        `part_id` and `sequence` are the frame's part identity
        (`schemas.frames.part_identity` reads them even from headers that do not parse).
        """
        value = value or b""
        truncated = max_value_bytes is not None and len(value) > max_value_bytes
        return cls(
            reason=reason,
            detail=detail,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original_key=key,
            original_headers=[DeadLetterHeader(key=k, value=v) for k, v in headers or ()],
            original_value=value[:max_value_bytes] if truncated else value,
            original_size=len(value),
            original_truncated=truncated,
            frame_id=frame_id,
            part_id=part_id,
            sequence=sequence,
            time=time or utc_now(),
        )

    def kafka_headers(self) -> list[tuple[str, bytes | None]]:
        """The original headers as Kafka expects them, for re-publishing the frame."""
        return [(h.key, h.value) for h in self.original_headers]

    def to_json(self) -> bytes:
        """The Kafka value: compact UTF-8 JSON."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse a Kafka value written by `to_json`."""
        return cls.model_validate_json(data)
