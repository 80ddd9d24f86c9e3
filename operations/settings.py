"""What the plant's operations read: the planes (Redis, S3, logging) and how long records live.

The base of the trainer's settings and part of the console's: both record retrain
outcomes, so both keep them as long (`KENPIN_OUTCOME_TTL_S`, plant-wide); both
read the line's threshold evidence, whose findings the console records
(`KENPIN_EVIDENCE_TTL_S`, plant-wide, the workers' score counts live as long).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from planes.settings import PlaneSettings


class OperationsSettings(PlaneSettings):
    """Redis, S3 and logging (`PlaneSettings`), and the retrain outcomes' lifetime."""

    plane_block: ClassVar[bool] = True

    outcome_ttl_s: float = Field(
        default=30 * 86400, gt=0, description="Retrain outcomes are kept this long."
    )
    evidence_ttl_s: float = Field(
        default=30 * 86400,
        gt=0,
        description="The line's threshold evidence (score counts, operators' findings) is kept "
        "this long after its last addition.",
    )
    evidence_min_normals: int = Field(
        default=300,
        ge=1,
        description="A line's own threshold is proposed once this many of its normals were "
        "judged under the serving release (and enough to back the target rate).",
    )
