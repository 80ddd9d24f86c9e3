"""The frame contract: what a camera must say about the image bytes it puts on Kafka.

A frame's Kafka value is the encoded image exactly as the camera made it (no
base64, no envelope), so everything else travels in Kafka record headers. Each
header value is UTF-8 text:

=========================  =====================================================
header                     value
=========================  =====================================================
``kenpin-frame-id``        unique id of this frame (a UUID is fine); keys outputs
``kenpin-line``            production line, also the topic suffix
``kenpin-camera``          camera id, also the record key
``kenpin-product``         product (class) on the frame, e.g. ``bottle``
``kenpin-capture-time``    ISO 8601 with a zone, e.g. ``2024-05-01T08:00:00.123Z``
``kenpin-content-type``    ``image/jpeg`` or ``image/png``
``kenpin-part-id``         optional: the PLC's part / trigger id for this capture
``kenpin-sequence``        optional: the camera's capture sequence number (0, 1, ...)
``kenpin-schema-version``  ``2`` (``1``: a camera from before the part headers)
=========================  =====================================================

The two optional headers are how a verdict finds its part on the conveyor: a
PLC that triggers the camera passes its own part id, and the worker copies it,
and the sequence number, unchanged into the verdict or dead letter. A frame
without them is judged all the same (version 1 cameras never send them).

Headers with other names are ignored, so cameras may add tracing headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
)

from schemas.common import FrameId, Name, UtcDatetime
from schemas.deadletters import DeadLetterReason

#: Version 2 added the optional part id and capture sequence headers; 1 is still accepted.
FRAME_SCHEMA_VERSION = 2
FrameSchemaVersion = Literal[1, 2]

#: A part / trigger id as a PLC writes it: printable ASCII, so it fits a PLC STRING
#: byte for byte and prints the same in every tool; 1 to 128 characters.
PART_ID_PATTERN = r"^[\x20-\x7e]{1,128}$"
PartId = Annotated[str, StringConstraints(pattern=PART_ID_PATTERN)]
#: A capture sequence number: what a camera or PLC counter holds (0 to 2**63 - 1: a PLC LINT).
#: Strict: "1_000" or "5.0" in a header is a broken camera, not a number to guess at.
MAX_CAPTURE_SEQUENCE = 2**63 - 1
CaptureSequence = Annotated[int, Strict(), Field(ge=0, le=MAX_CAPTURE_SEQUENCE)]

ContentType = Literal["image/jpeg", "image/png"]

#: File extension (lower case) -> content type, for cameras that stream files.
CONTENT_TYPE_BY_EXTENSION: Mapping[str, ContentType] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}
#: Content type -> the extension used when kenpin stores such a frame.
EXTENSION_BY_CONTENT_TYPE: Mapping[str, str] = {"image/jpeg": ".jpg", "image/png": ".png"}

#: Field name -> Kafka header name.
HEADER_NAMES: Mapping[str, str] = {
    "frame_id": "kenpin-frame-id",
    "line": "kenpin-line",
    "camera": "kenpin-camera",
    "product": "kenpin-product",
    "capture_time": "kenpin-capture-time",
    "content_type": "kenpin-content-type",
    "part_id": "kenpin-part-id",
    "sequence": "kenpin-sequence",
    "schema_version": "kenpin-schema-version",
}
#: Headers a frame may leave out (written only when they have a value).
OPTIONAL_HEADERS = frozenset({"kenpin-part-id", "kenpin-sequence"})
_FIELD_BY_HEADER = {header: field for field, header in HEADER_NAMES.items()}
_NUMERIC_FIELDS = frozenset({"schema_version", "sequence"})

KafkaHeaders = list[tuple[str, bytes]]

_ABSENT = object()  # stands in for a missing header that has a model default


def content_type_for_path(path: str | PurePath) -> ContentType:
    """The content type a file's extension implies; ValueError for anything but JPEG/PNG."""
    suffix = PurePath(path).suffix.lower()
    try:
        return CONTENT_TYPE_BY_EXTENSION[suffix]
    except KeyError:
        raise ValueError(f"no frame content type for extension {suffix!r} of {path}") from None


class FrameHeadersError(ValueError):
    """Kafka headers that do not make a valid frame: says which are missing and which are wrong.

    `missing` and `invalid` use the Kafka header names, so the message can be
    read next to the record in any Kafka tool. `reason` is the dead-letter code.
    """

    def __init__(self, missing: Iterable[str] = (), invalid: Mapping[str, str] | None = None):
        self.missing: list[str] = sorted(missing)
        self.invalid: dict[str, str] = dict(invalid or {})
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.invalid:
            parts.append(
                "invalid " + "; ".join(f"{name}: {why}" for name, why in self.invalid.items())
            )
        super().__init__("frame headers: " + " | ".join(parts or ["invalid"]))

    @property
    def reason(self) -> DeadLetterReason:
        """Dead-letter code: missing wins over invalid; a lone bad content type is its own code."""
        if self.missing:
            return DeadLetterReason.MISSING_HEADERS
        if set(self.invalid) == {HEADER_NAMES["content_type"]}:
            return DeadLetterReason.UNSUPPORTED_CONTENT_TYPE
        return DeadLetterReason.INVALID_HEADERS


def _document_headers(schema: dict[str, Any]) -> None:
    # Integrators read the JSON Schema, not this module: name each field's header there.
    for field, header in HEADER_NAMES.items():
        schema["properties"][field]["x-kafka-header"] = header


class FrameHeaders(BaseModel):
    """Everything a worker needs to know about a frame besides its pixels.

    On the wire these are Kafka record headers with UTF-8 text values (see each
    property's `x-kafka-header`); the record value is the encoded image itself.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_document_headers,
    )

    frame_id: FrameId = Field(description="Unique id of the frame; every output is keyed by it.")
    line: Name = Field(description="Production line; frames arrive on kenpin.frames.<line>.")
    camera: Name = Field(description="Camera id; the Kafka record key.")
    product: Name = Field(description="Product (class) on the frame, e.g. 'bottle'.")
    capture_time: UtcDatetime = Field(description="When the camera took the frame (UTC).")
    content_type: ContentType = Field(description="Encoding of the record value.")
    part_id: PartId | None = Field(
        default=None,
        description="The PLC's part / trigger id for this capture (printable ASCII, at most "
        "128 characters); copied unchanged into the verdict or dead letter.",
    )
    sequence: CaptureSequence | None = Field(
        default=None,
        description="The camera's capture sequence number (decimal text in the header); "
        "copied unchanged into the verdict or dead letter.",
    )
    schema_version: FrameSchemaVersion = Field(
        default=FRAME_SCHEMA_VERSION,
        description="Version of this header set: 2 added part_id and sequence; 1 is accepted.",
    )

    @property
    def extension(self) -> str:
        """File extension for storing this frame's bytes, e.g. '.jpg'."""
        return EXTENSION_BY_CONTENT_TYPE[self.content_type]

    def to_kafka_headers(self) -> KafkaHeaders:
        """Kafka record headers, in the order of `HEADER_NAMES`; absent optional ones left out."""
        values = self.model_dump(mode="json")
        return [
            (header, str(values[field]).encode())
            for field, header in HEADER_NAMES.items()
            if values[field] is not None
        ]

    @classmethod
    def from_kafka_headers(cls, headers: Iterable[tuple[str, bytes | None]] | None) -> Self:
        """Parse Kafka record headers; raises FrameHeadersError naming every problem at once.

        A header repeated with the same value is accepted; repeated with
        different values it is invalid, since either choice could be wrong.
        """
        values: dict[str, str | int] = {}
        invalid: dict[str, str] = {}
        for name, raw in headers or ():
            field = _FIELD_BY_HEADER.get(name)
            if field is None:
                continue
            if raw is None:
                invalid[name] = "null value"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                invalid[name] = "not UTF-8"
                continue
            if field in values and str(values[field]) != text:
                invalid[name] = "repeated with different values"
                continue
            # Header values are text; the version and the sequence are numbers in the model,
            # written in plain ASCII digits (anything else stays text, and fails validation).
            numeric = field in _NUMERIC_FIELDS and text.isascii() and text.isdecimal()
            values[field] = int(text) if numeric else text

        # One validation pass reports every field at once; `schema_version` is
        # required on the wire (a camera must say which contract it speaks).
        missing: list[str] = []
        try:
            parsed = cls.model_validate(
                values | {"schema_version": values.get("schema_version", _ABSENT)}
            )
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                header = HEADER_NAMES.get(field, field)
                if header in invalid:
                    continue
                if error["type"] == "missing" or error["input"] is _ABSENT:
                    missing.append(header)
                else:
                    invalid.setdefault(header, error["msg"])
            raise FrameHeadersError(missing, invalid) from exc
        if invalid:
            raise FrameHeadersError(missing, invalid)
        return parsed


def part_identity(
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> tuple[str | None, int | None]:
    """(part id, capture sequence) read from raw headers, each None when absent or invalid.

    For a frame whose headers as a whole do not parse (it becomes a dead letter),
    so that the dead letter, and the PLC, still learn which part it was whenever
    those two headers themselves are sound. The first occurrence of each counts.
    """
    found: dict[str, str] = {}
    for name, raw in headers or ():
        field = _FIELD_BY_HEADER.get(name)
        if field in ("part_id", "sequence") and field not in found and raw is not None:
            try:
                found[field] = raw.decode("utf-8")
            except UnicodeDecodeError:
                found[field] = ""
    part_id = found.get("part_id")
    if part_id is not None and not re.fullmatch(PART_ID_PATTERN, part_id):
        part_id = None
    text = found.get("sequence", "")
    sequence = int(text) if text.isascii() and text.isdecimal() else None
    if sequence is not None and sequence > MAX_CAPTURE_SEQUENCE:
        sequence = None
    return part_id, sequence
