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
``kenpin-schema-version``  ``1``
=========================  =====================================================

Headers with other names are ignored, so cameras may add tracing headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.common import FrameId, Name, UtcDatetime
from schemas.deadletters import DeadLetterReason

FRAME_SCHEMA_VERSION = 1

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
    "schema_version": "kenpin-schema-version",
}
_FIELD_BY_HEADER = {header: field for field, header in HEADER_NAMES.items()}

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
    schema_version: Literal[1] = Field(
        default=FRAME_SCHEMA_VERSION, description="Version of this header set."
    )

    @property
    def extension(self) -> str:
        """File extension for storing this frame's bytes, e.g. '.jpg'."""
        return EXTENSION_BY_CONTENT_TYPE[self.content_type]

    def to_kafka_headers(self) -> KafkaHeaders:
        """Kafka record headers, in the order of `HEADER_NAMES`."""
        values = self.model_dump(mode="json")
        return [(header, str(values[field]).encode()) for field, header in HEADER_NAMES.items()]

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
            # Header values are text; the version is a number in the model.
            values[field] = int(text) if field == "schema_version" and text.isdecimal() else text

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
