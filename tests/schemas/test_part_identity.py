"""Part identity: the PLC's part id and the capture sequence, from the camera's headers to the
verdict and the dead letter, unchanged; frames and outputs from before them still parse."""

import json
from datetime import UTC, datetime

import pytest

from schemas.deadletters import DeadLetter, DeadLetterReason
from schemas.frames import FrameHeaders, FrameHeadersError, part_identity
from schemas.verdicts import Verdict

CAPTURE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def frame(**overrides) -> FrameHeaders:
    fields = dict(
        frame_id="f-1",
        line="l1",
        camera="cam-1",
        product="bottle",
        capture_time=CAPTURE,
        content_type="image/png",
    )
    return FrameHeaders(**(fields | overrides))


def with_header(headers, name: str, value: bytes | None):
    return [(k, v) for k, v in headers if k != name] + [(name, value)]


def test_part_headers_travel_into_the_verdict_unchanged():
    headers = frame(part_id="L1 #000123/B", sequence=2**63 - 1).to_kafka_headers()
    assert dict(headers)["kenpin-part-id"] == b"L1 #000123/B"
    assert dict(headers)["kenpin-sequence"] == str(2**63 - 1).encode()
    parsed = FrameHeaders.from_kafka_headers(headers)
    verdict = Verdict.for_frame(parsed, result="ok", score=0.1, threshold=0.5, model_version="v")
    wire = json.loads(verdict.to_json())
    assert (wire["part_id"], wire["sequence"]) == ("L1 #000123/B", 2**63 - 1)
    assert wire["schema_version"] == 2
    assert Verdict.from_json(verdict.to_json()) == verdict


def test_a_version_1_frame_without_part_headers_is_still_judged():
    headers = with_header(frame().to_kafka_headers(), "kenpin-schema-version", b"1")
    assert not any(k in ("kenpin-part-id", "kenpin-sequence") for k, _ in headers)
    parsed = FrameHeaders.from_kafka_headers(headers)
    assert (parsed.part_id, parsed.sequence, parsed.schema_version) == (None, None, 1)


def test_a_version_1_verdict_and_dead_letter_still_parse():
    verdict = json.loads(
        Verdict.for_frame(
            frame(), result="ok", score=0.1, threshold=0.5, model_version="v"
        ).to_json()
    )
    for field in ("part_id", "sequence"):
        del verdict[field]
    old = Verdict.model_validate(verdict | {"schema_version": 1})
    assert (old.part_id, old.sequence, old.schema_version) == (None, None, 1)
    letter = json.loads(dead_letter(frame().to_kafka_headers()).to_json())
    for field in ("part_id", "sequence"):
        del letter[field]
    assert DeadLetter.model_validate(letter | {"schema_version": 1}).part_id is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kenpin-part-id", b""),
        ("kenpin-part-id", "Teil-ä".encode()),  # not printable ASCII
        ("kenpin-part-id", b"x" * 129),
        ("kenpin-part-id", b"tab\there"),
        ("kenpin-sequence", b"-1"),
        ("kenpin-sequence", b"1_000"),
        ("kenpin-sequence", b"5.0"),
        ("kenpin-sequence", b" 5"),
        ("kenpin-sequence", str(2**63).encode()),
    ],
)
def test_a_malformed_part_header_makes_invalid_headers(name, value):
    headers = with_header(frame().to_kafka_headers(), name, value)
    with pytest.raises(FrameHeadersError) as info:
        FrameHeaders.from_kafka_headers(headers)
    assert set(info.value.invalid) == {name}
    assert info.value.reason is DeadLetterReason.INVALID_HEADERS


def dead_letter(headers) -> DeadLetter:
    part_id, sequence = part_identity(headers)
    return DeadLetter.from_record(
        reason=DeadLetterReason.INVALID_HEADERS,
        detail="bad capture time",
        topic="kenpin.frames.l1",
        partition=0,
        offset=7,
        key=b"cam-1",
        value=b"\x89PNG",
        headers=headers,
        part_id=part_id,
        sequence=sequence,
    )


def test_the_dead_letter_names_the_part_even_when_other_headers_are_broken():
    headers = with_header(
        frame(part_id="P-9", sequence=9).to_kafka_headers(), "kenpin-capture-time", b"noon"
    )
    letter = DeadLetter.from_json(dead_letter(headers).to_json())
    assert (letter.part_id, letter.sequence, letter.schema_version) == ("P-9", 9, 2)


def test_part_identity_drops_what_is_malformed_and_keeps_the_rest():
    assert part_identity(None) == (None, None)
    assert part_identity([("kenpin-part-id", b"\xff"), ("kenpin-sequence", b"12")]) == (None, 12)
    assert part_identity([("kenpin-part-id", b"P-1"), ("kenpin-sequence", b"x")]) == ("P-1", None)
    assert part_identity([("kenpin-part-id", None), ("kenpin-part-id", b"P-2")]) == ("P-2", None)
