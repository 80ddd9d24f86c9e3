"""What the bridge tells a PLC about one part: the payload of OPC UA and MQTT alike.

A verdict says OK or NG; a PLC also needs to hear about the parts that got no
verdict: REJECTED_INPUT (the frame was a dead letter: corrupt, wrong headers,
unknown product) and TIMEOUT (nothing came within the line's deadline). Each
outcome carries the bridge's own per-line `sequence`, which only ever grows
while the bridge runs, so a PLC can latch on a change of it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import UtcDatetime

Decision = Literal["OK", "NG", "TIMEOUT", "REJECTED_INPUT"]

#: What a PLC should do with each decision (docs/plc-integration.md): only OK passes.
PASSES: dict[str, bool] = {"OK": True, "NG": False, "TIMEOUT": False, "REJECTED_INPUT": False}


class Outcome(BaseModel):
    """One decision on one part of one line, as the PLC reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    line: str
    sequence: int = Field(ge=1, description="Per line, +1 for every outcome; the PLC's latch.")
    verdict: Decision
    frame_id: str | None = Field(description="null only for a dead letter without headers.")
    part_id: str | None = Field(description="The PLC's part id from the camera, if it sent one.")
    capture_sequence: int | None = Field(description="The camera's capture sequence number.")
    camera: str | None = None
    product: str | None = None
    score: float | None = Field(default=None, description="OK / NG only.")
    threshold: float | None = Field(default=None, description="OK / NG only.")
    model_version: str | None = Field(default=None, description="OK / NG only.")
    heatmap_key: str | None = Field(default=None, description="NG only.")
    reason: str | None = Field(
        default=None, description="REJECTED_INPUT: the dead-letter code; TIMEOUT: 'deadline'."
    )
    capture_time: UtcDatetime | None = None
    published_time: UtcDatetime
    waited_ms: float | None = Field(
        default=None,
        description="From the part's capture to this outcome, on the bridge's clock (deadlines "
        "from capture); from the bridge seeing the frame (deadlines from the frame seen; null: "
        "the frame was not seen, e.g. the verdict came first).",
    )
    deadline_ms: float = Field(description="The line's deadline when this was decided.")

    @property
    def passes(self) -> bool:
        """Whether the PLC lets the part through: OK only."""
        return PASSES[self.verdict]

    def to_json(self) -> bytes:
        """The MQTT payload and the OPC UA `Json` value: compact UTF-8 JSON."""
        return self.model_dump_json().encode()
