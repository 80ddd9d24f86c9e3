"""DeadLetter JSON: the original record survives intact (or visibly truncated) for a replay."""

import base64
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.deadletters import DeadLetter, DeadLetterReason

BYTES = bytes(range(256)) * 4  # every byte value, not valid UTF-8
HEADERS = [("kenpin-line", b"l1"), ("junk", b"\xff\xfe"), ("empty", None)]


def make(**overrides) -> DeadLetter:
    fields = dict(
        reason=DeadLetterReason.CORRUPT_IMAGE,
        detail="OpenCV could not decode the image/png",
        topic="kenpin.frames.l1",
        partition=2,
        offset=1234,
        key=b"cam-1",
        value=BYTES,
        headers=HEADERS,
        time=datetime(2024, 5, 1, tzinfo=UTC),
    )
    return DeadLetter.from_record(**(fields | overrides))


def test_json_round_trip_keeps_bytes_and_headers_exactly():
    letter = make()
    restored = DeadLetter.from_json(letter.to_json())
    assert restored == letter
    assert restored.original_value == BYTES
    assert restored.kafka_headers() == HEADERS
    assert restored.original_key == b"cam-1"


def test_bytes_are_standard_base64_in_json():
    wire = json.loads(make().to_json())
    assert base64.b64decode(wire["original_value"], validate=True) == BYTES
    assert wire["original_key"] == base64.b64encode(b"cam-1").decode()
    assert wire["reason"] == "corrupt_image"
    assert wire["source_topic"] == "kenpin.frames.l1"
    assert (wire["source_partition"], wire["source_offset"]) == (2, 1234)
    assert wire["original_size"] == len(BYTES)
    assert wire["original_truncated"] is False


def test_oversized_values_are_truncated_visibly():
    letter = make(max_value_bytes=100)
    assert letter.original_value == BYTES[:100]
    assert letter.original_size == len(BYTES)
    assert letter.original_truncated is True


def test_empty_and_null_values():
    letter = make(value=None, key=None, headers=None, reason=DeadLetterReason.EMPTY_PAYLOAD)
    restored = DeadLetter.from_json(letter.to_json())
    assert restored.original_value == b""
    assert restored.original_key is None
    assert restored.original_headers == []


def test_invalid_base64_is_rejected():
    wire = json.loads(make().to_json())
    wire["original_value"] = "not base64!!"
    with pytest.raises(ValidationError, match="base64"):
        DeadLetter.model_validate(wire)


def test_reason_codes_are_stable_strings():
    assert {r.value for r in DeadLetterReason} >= {
        "corrupt_image",
        "empty_payload",
        "unsupported_content_type",
        "image_too_large",
        "missing_headers",
        "invalid_headers",
        "unknown_product",
    }
    with pytest.raises(ValidationError):
        DeadLetter.model_validate(json.loads(make().to_json()) | {"reason": "gremlins"})
