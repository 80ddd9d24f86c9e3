"""The release gate's report: what a candidate and the current release measured, and the verdict.

Recorded in a retrain's outcome (`schemas.control.RetrainOutcome.gate`) and, for
a released candidate, its own measurement in the manifest's `metrics["gate"]`,
so an operator's tool or a dashboard can read why a model was or was not
released without importing kenpin's code. `GatePolicy` is what the gate judged
against: the trainer's settings of the same names (`KENPIN_GATE_*`,
`KENPIN_MAX_*`) take their defaults from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GATE_SCHEMA_VERSION = 1


class GatePolicy(BaseModel):
    """The tolerances against the current release, and the floors any release must pass."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    max_false_alarm_increase: float = Field(
        default=0.02,
        ge=0,
        description="A candidate whose false-alarm rate on held-out normals exceeds the "
        "current release's by more than this is not released.",
    )
    max_auroc_drop: float = Field(
        default=0.02,
        ge=0,
        description="A candidate whose image AUROC on labelled anomalies is below the current "
        "release's by more than this is not released.",
    )
    max_false_alarm_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A first release (nothing to compare against) whose false-alarm rate on "
        "held-out normals exceeds this is not released.",
    )
    min_synthetic_auroc: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="A first release whose image AUROC on defects drawn onto held-out "
        "normals is below this is not released (a blind model scores 0.5).",
    )
    min_synthetic_recall: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="No release may flag fewer than this fraction of the defects drawn onto "
        "held-out normals: a model that flags nothing never goes live.",
    )


class ProductMeasure(BaseModel):
    """One product, one model: held-out normals, drawn defects, labelled anomalies."""

    model_config = ConfigDict(extra="ignore")

    threshold: float
    normals: int = Field(description="Held-out normal images judged.")
    false_alarms: int = Field(description="Held-out normals scoring above the threshold.")
    false_alarm_rate: float
    synthetic_auroc: float | None = Field(
        default=None, description="Image AUROC: held-out normals against defects drawn on them."
    )
    synthetic_recall: float | None = Field(
        default=None, description="Fraction of the drawn defects above the threshold."
    )
    anomalies: int | None = Field(default=None, description="Labelled anomalies judged, if any.")
    image_auroc: float | None = Field(
        default=None, description="Image AUROC: held-out normals against labelled anomalies."
    )
    recall: float | None = Field(
        default=None, description="Fraction of the labelled anomalies above the threshold."
    )


class Pooled(BaseModel):
    """Rates pooled and AUROCs averaged over a set of products."""

    model_config = ConfigDict(extra="ignore")

    false_alarm_rate: float
    image_auroc: float | None = None
    synthetic_auroc: float | None = None
    synthetic_recall: float | None = None


class Comparison(BaseModel):
    """Candidate and current release pooled over the products both know."""

    model_config = ConfigDict(extra="ignore")

    products: list[str]
    candidate: Pooled
    current: Pooled


class ModelMeasure(Pooled):
    """One model measured by the gate: per product, and pooled over all it knows."""

    version: str
    products: dict[str, ProductMeasure]
    compared: Comparison | None = Field(
        default=None, description="Beside the current release (absent for a first release)."
    )


class GateReport(BaseModel):
    """The gate's verdict on one candidate: final, with every reason."""

    model_config = ConfigDict(extra="ignore")

    released: bool = Field(description="The candidate passed and may go live.")
    reasons: list[str] = Field(
        description="Why it was refused, or in what way it passed (one line each)."
    )
    candidate: ModelMeasure
    current: ModelMeasure | None = Field(
        default=None, description="The release it was compared with (None: a first release)."
    )
    policy: GatePolicy = Field(
        default_factory=GatePolicy, description="The tolerances and floors judged against."
    )
    schema_version: Literal[1] = GATE_SCHEMA_VERSION
