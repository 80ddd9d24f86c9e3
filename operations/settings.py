"""What the plant's operations read: the planes (Redis, S3, logging) and how long outcomes live.

The base of the trainer's settings and part of the console's: both record retrain
outcomes, so both keep them as long (`KENPIN_OUTCOME_TTL_S`, plant-wide).
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
