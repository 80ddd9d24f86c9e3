"""FrameHeaders <-> Kafka headers: round trip, and error reports that name every problem."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas.deadletters import DeadLetterReason
from schemas.frames import (
    HEADER_NAMES,
    OPTIONAL_HEADERS,
    FrameHeaders,
    FrameHeadersError,
    content_type_for_path,
)

CAPTURE = datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)


def make_headers(**overrides) -> FrameHeaders:
    fields = dict(
        frame_id="3f0c1b9e-6d7a-4c55-9a51-0c7f1c7a2b11",
        line="line-1",
        camera="cam-1",
        product="metal_nut",
        capture_time=CAPTURE,
        content_type="image/png",
    )
    return FrameHeaders(**(fields | overrides))


def replace(headers: list[tuple[str, bytes]], name: str, value: bytes | None):
    return [(k, value if k == name else v) for k, v in headers]


def test_round_trip_through_kafka_headers():
    frame = make_headers(part_id="P-0001", sequence=41)
    kafka_headers = frame.to_kafka_headers()
    assert [name for name, _ in kafka_headers] == list(HEADER_NAMES.values())
    assert all(isinstance(v, bytes) for _, v in kafka_headers)
    assert dict(kafka_headers)["kenpin-capture-time"] == b"2024-05-01T08:00:00.123456Z"
    assert FrameHeaders.from_kafka_headers(kafka_headers) == frame


def test_capture_time_is_normalised_to_utc_and_must_have_a_zone():
    tokyo = timezone(timedelta(hours=9))
    frame = make_headers(capture_time=datetime(2024, 5, 1, 17, 0, tzinfo=tokyo))
    assert frame.capture_time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert frame.capture_time.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError):
        make_headers(capture_time=datetime(2024, 5, 1, 8, 0))


@pytest.mark.parametrize("line", ["a.b", "a/b", "", "../x", "-lead"])
def test_line_names_must_be_topic_and_key_safe(line):
    with pytest.raises(ValidationError):
        make_headers(line=line)


def test_unknown_headers_are_ignored():
    headers = [*make_headers().to_kafka_headers(), ("traceparent", b"00-abc"), ("x", None)]
    assert FrameHeaders.from_kafka_headers(headers) == make_headers()


def test_missing_headers_are_all_named():
    headers = [
        (k, v)
        for k, v in make_headers().to_kafka_headers()
        if k not in ("kenpin-camera", "kenpin-schema-version")
    ]
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert info.value.missing == ["kenpin-camera", "kenpin-schema-version"]
    assert info.value.invalid == {}
    assert info.value.reason is DeadLetterReason.MISSING_HEADERS
    assert "kenpin-camera" in str(info.value)


def test_no_headers_at_all():
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(None)
    assert info.value.missing == sorted(set(HEADER_NAMES.values()) - OPTIONAL_HEADERS)


def test_invalid_and_missing_are_reported_together():
    headers = replace(make_headers().to_kafka_headers(), "kenpin-line", b"a/b")
    headers = replace(headers, "kenpin-capture-time", b"2024-05-01T08:00:00")  # no zone
    headers = [(k, v) for k, v in headers if k != "kenpin-product"]
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert info.value.missing == ["kenpin-product"]
    assert set(info.value.invalid) == {"kenpin-line", "kenpin-capture-time"}
    assert info.value.reason is DeadLetterReason.MISSING_HEADERS


@pytest.mark.parametrize(
    ("value", "why"),
    [(b"\xff\xfe", "not UTF-8"), (None, "null value")],
)
def test_undecodable_values_are_invalid(value, why):
    headers = replace(make_headers().to_kafka_headers(), "kenpin-frame-id", value)
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert info.value.invalid == {"kenpin-frame-id": why}
    assert info.value.missing == []
    assert info.value.reason is DeadLetterReason.INVALID_HEADERS


def test_conflicting_repeated_header_is_invalid_but_identical_repeat_is_fine():
    headers = make_headers().to_kafka_headers()
    assert FrameHeaders.from_kafka_headers([*headers, ("kenpin-line", b"line-1")])
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers([*headers, ("kenpin-line", b"line-2")])
    assert "kenpin-line" in info.value.invalid


def test_unsupported_content_type_has_its_own_reason():
    headers = replace(make_headers().to_kafka_headers(), "kenpin-content-type", b"image/gif")
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert info.value.reason is DeadLetterReason.UNSUPPORTED_CONTENT_TYPE


def test_newer_schema_version_is_rejected():
    headers = replace(make_headers().to_kafka_headers(), "kenpin-schema-version", b"3")
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert set(info.value.invalid) == {"kenpin-schema-version"}


def test_content_type_and_extension():
    assert content_type_for_path("a/B.JPEG") == "image/jpeg"
    assert content_type_for_path("x.png") == "image/png"
    assert make_headers(content_type="image/jpeg").extension == ".jpg"
    with pytest.raises(ValueError):
        content_type_for_path("x.bmp")
