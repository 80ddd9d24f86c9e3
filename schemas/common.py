"""Field types shared by the contracts, so a name or a time means the same in every message.

A line name becomes part of a Kafka topic (`kenpin.frames.<line>`), and line,
product and frame id become parts of S3 object keys. One rule for all of them
keeps topics legal (Kafka allows `[A-Za-z0-9._-]`) and keys free of `/` and
`..`. Dots are left out of line names so that the line is always the text after
the last dot of a topic name.

Times are timezone-aware and normalised to UTC: a naive time from a camera
whose clock zone nobody knows is rejected rather than guessed.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

#: Line, camera and product names: letters, digits, `_` and `-`; 1 to 64 characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: Frame ids: as names, plus `.`, up to 128 characters (a UUID fits either way).
FRAME_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
FrameId = Annotated[str, StringConstraints(pattern=FRAME_ID_PATTERN)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: A timezone-aware time, stored in UTC; JSON form is ISO 8601 ending in `Z`.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def utc_now() -> datetime:
    """The current time in UTC (one place to read the clock for the contracts)."""
    return datetime.now(UTC)


def _from_base64(value: Any) -> Any:
    # Python callers pass raw bytes; JSON carries standard base64 text.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64: {exc}") from exc
    return value


def _to_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


#: Raw bytes in Python, standard (not URL-safe) base64 text in JSON, so that
#: `base64 -d` on any integrator's shell restores the original payload.
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(_to_base64, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
