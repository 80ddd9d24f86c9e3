"""The verdict contract: what the PLC that sorts parts reads for every frame.

The Kafka value is this model as JSON on `kenpin.verdicts.<line>`, keyed by
camera id. Every field a sorter or a dashboard needs is in the value itself, so
a consumer never has to look at the frame or its headers: the PLC's part id
and the capture sequence number, when the camera sent them, are copied here.

A verdict record also carries `WorkerStages` in its `kenpin-stages` header: when
the worker took the frame from the broker, began and ended its forward pass.
Observability only (the latency budget, `deploy.benchmarks.latency_budget`); a
consumer that ignores headers misses nothing it needs to sort parts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import FrameId, Name, UtcDatetime, utc_now
from schemas.frames import CaptureSequence, FrameHeaders, PartId

#: Version 2 added part_id and sequence (null for frames that did not carry them).
VERDICT_SCHEMA_VERSION = 2

Result = Literal["ok", "ng"]


#: Kafka header of a verdict record holding its `WorkerStages` (JSON).
STAGES_HEADER = "kenpin-stages"


class WorkerStages(BaseModel):
    """Where the worker spent a frame's time, on the worker's wall clock (epoch ms).

    Capture (the frame's header) -> `polled` is the way in (camera, broker, fetch);
    `polled` -> `judging` the decode and the wait for a batch; `judging` -> `judged`
    the forward pass of the frame's batch; the verdict record's own timestamp is when
    it was produced.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    polled: float = Field(description="When the worker's consumer returned the frame.")
    judging: float = Field(description="When the forward pass of the frame's batch began.")
    judged: float = Field(description="When that forward pass ended.")

    def to_kafka_header(self) -> tuple[str, bytes]:
        return STAGES_HEADER, self.model_dump_json().encode()

    @classmethod
    def from_kafka_headers(cls, headers: list[tuple[str, bytes]] | None) -> Self | None:
        """The stages a verdict record carries; None for a record without (older workers)."""
        raw = next((v for k, v in headers or () if k == STAGES_HEADER), None)
        return None if raw is None else cls.model_validate_json(raw)


class Verdict(BaseModel):
    """The judgement of one frame: ok (pass the part) or ng (no good: reject it)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        allow_inf_nan=False,
    )

    frame_id: FrameId = Field(description="Id of the judged frame; a replay repeats it.")
    line: Name
    camera: Name
    product: Name
    result: Result = Field(description="'ok' passes the part, 'ng' rejects it.")
    score: float = Field(description="Anomaly score of the frame; higher is more anomalous.")
    threshold: float = Field(description="The product's threshold in the model release used.")
    model_version: str = Field(min_length=1, description="Release that judged the frame.")
    heatmap_key: str | None = Field(
        default=None,
        description="S3 object key of the heatmap (NG only; null for OK). The heatmap may "
        "appear shortly after the verdict: it is stored off the hot path.",
    )
    capture_time: UtcDatetime = Field(description="When the camera took the frame (UTC).")
    part_id: PartId | None = Field(
        default=None,
        description="The PLC's part / trigger id from the frame's kenpin-part-id header, "
        "unchanged; null when the frame had none.",
    )
    sequence: CaptureSequence | None = Field(
        default=None,
        description="The capture sequence number from the frame's kenpin-sequence header, "
        "unchanged; null when the frame had none.",
    )
    decision_time: UtcDatetime = Field(description="When the worker decided (UTC).")
    latency_ms: float = Field(
        description="decision_time - capture_time in milliseconds; negative only if the "
        "camera's clock runs ahead of the worker's."
    )
    schema_version: Literal[1, 2] = Field(
        default=VERDICT_SCHEMA_VERSION,
        description="2 added part_id and sequence; a version 1 verdict (older worker) has neither.",
    )

    @model_validator(mode="after")
    def _heatmap_only_for_ng(self) -> Self:
        if self.result == "ok" and self.heatmap_key is not None:
            raise ValueError("heatmap_key must be null for an 'ok' verdict")
        return self

    @classmethod
    def for_frame(
        cls,
        frame: FrameHeaders,
        *,
        result: Result,
        score: float,
        threshold: float,
        model_version: str,
        heatmap_key: str | None = None,
        decision_time: datetime | None = None,
    ) -> Self:
        """The verdict on `frame`, with the latency computed from its capture time."""
        decided = decision_time or utc_now()
        latency_ms = (decided - frame.capture_time).total_seconds() * 1000.0
        return cls(
            frame_id=frame.frame_id,
            line=frame.line,
            camera=frame.camera,
            product=frame.product,
            result=result,
            score=score,
            threshold=threshold,
            model_version=model_version,
            heatmap_key=heatmap_key,
            capture_time=frame.capture_time,
            part_id=frame.part_id,
            sequence=frame.sequence,
            decision_time=decided,
            latency_ms=latency_ms,
        )

    def to_json(self) -> bytes:
        """The Kafka value: compact UTF-8 JSON."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse a Kafka value written by `to_json`."""
        return cls.model_validate_json(data)
