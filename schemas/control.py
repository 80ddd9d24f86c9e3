"""Control-plane contracts kept in Redis: retrain requests, their outcomes, worker heartbeats.

The model release itself is `schemas.manifest.ModelManifest` (the value of
`kenpin:model:current`). These are the other messages on the control plane, so
an operator's tool, a dashboard or a second trainer can read them without
importing kenpin's code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.common import Name, UtcDatetime
from schemas.gate import GateReport

CONTROL_SCHEMA_VERSION = 1

RetrainStatus = Literal["queued", "running", "released", "refused", "failed"]
#: The statuses an outcome ends in: it changes no more.
FINAL_STATUSES: frozenset[RetrainStatus] = frozenset({"released", "refused", "failed"})


class LineThresholdChange(BaseModel):
    """A release of the current weights that gives one line its own threshold of one product.

    The trainer reads the line's evidence itself when it runs the request
    (`operations.line_calibration`), so what is released is what the counts say
    then, and it refuses the change if the current release is no longer `base_version`.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    line: Name
    product: Name
    target_false_alarm_rate: float = Field(gt=0, lt=1)
    base_version: str = Field(description="The release whose counts the proposal was read from.")


class RetrainRequest(BaseModel):
    """One entry of the stream `kenpin:retrain`: who asked for a retrain, why and when."""

    model_config = ConfigDict(extra="ignore")

    who: str = Field(description="Operator, service or schedule that asked.")
    reason: str = Field(description="Why, in words (shown in the outcome and the manifest).")
    when: UtcDatetime
    recipe: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the trainer's recipe for this run only, e.g. "
        '{"epochs": 30, "lr": 0.03, "checkpoint": "synthetic", "scoring": {"scales": [1, 2]}}; '
        "keys: the fields of the trainer's training configuration (trainer/learning/config.py, "
        "`kenpin-trainer retrain --help` lists them) except backbone, teacher_weights and "
        "device; a trainer refuses a request with any other key.",
    )
    line_threshold: LineThresholdChange | None = Field(
        default=None,
        description="No training: release the current weights with this line's own threshold "
        "(the recipe is then ignored).",
    )
    schema_version: Literal[1] = CONTROL_SCHEMA_VERSION


class RetrainOutcome(BaseModel):
    """What became of a retrain request; updated as the run moves through its stages."""

    model_config = ConfigDict(extra="ignore")

    request_id: str = Field(description="Redis stream entry id of the request.")
    status: RetrainStatus
    detail: str = Field(default="", description="Why it was refused or failed, or what it did.")
    version: str | None = Field(default=None, description="Candidate version, once trained.")
    parent_version: str | None = Field(default=None, description="Release it was gated against.")
    snapshot_id: str | None = Field(default=None, description="Hash of the normal-store keys.")
    stages: dict[str, float] = Field(
        default_factory=dict, description="Seconds spent in each stage of the run."
    )
    gate: GateReport | None = Field(
        default=None, description="The release gate's report, once the candidate was measured."
    )
    trainer: str | None = Field(default=None, description="Trainer that ran it.")
    updated: UtcDatetime
    schema_version: Literal[1] = CONTROL_SCHEMA_VERSION

    @field_validator("gate", mode="before")
    @classmethod
    def _no_report_yet(cls, value: object) -> object:
        return None if value == {} else value  # outcomes recorded before the report was typed

    @property
    def final(self) -> bool:
        """The run is over (released, refused or failed): this outcome changes no more."""
        return self.status in FINAL_STATUSES


class WorkerHeartbeat(BaseModel):
    """A worker's liveness and the release it serves; the key expires when the worker dies."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    host: str
    active_version: str
    pending_version: str | None = Field(
        default=None, description="Release being loaded beside the live model, if any."
    )
    refused_versions: list[str] = Field(
        default_factory=list, description="Releases this worker refused to serve."
    )
    time: UtcDatetime
    schema_version: Literal[1] = CONTROL_SCHEMA_VERSION
