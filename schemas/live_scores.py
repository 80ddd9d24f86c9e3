"""The line's own evidence for its thresholds: judged scores, counted, and operators' findings.

A threshold calibrated on held-out normals keeps its promise for parts like
those normals; the line's parts may look otherwise (another batch, another
light). So every worker counts the image scores it judges, per serving
release, line and product, in bins of the release's threshold
(`BINS_PER_THRESHOLD` bins from 0 to the threshold; scores of `TOP_BIN` bins
and more, three times the threshold, share the last one). Every judged frame
is counted, OK and NG alike, unlike the normal store's sample, which keeps only
confident OK frames: a threshold read off a sample that stops below the
current threshold could never move up.

What a count cannot say, an operator can: an NG part found fine or confirmed
defective is a `PartFinding`. Together they are the evidence
`operations.line_calibration` proposes a threshold from.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import FrameId, Name, UtcDatetime

#: Bins per threshold: a bin is 0.1 % of the threshold wide.
BINS_PER_THRESHOLD = 1000
#: The last bin: scores of three times the threshold and more.
TOP_BIN = 3 * BINS_PER_THRESHOLD

LIVE_SCORES_SCHEMA_VERSION = 1

Finding = Literal["fine", "defective"]
Judged = Literal["ok", "ng"]


def score_bin(score: float, threshold: float) -> int:
    """The bin of `score` under `threshold` (> 0): floor(score / threshold * bins), <= TOP_BIN."""
    if not threshold > 0:
        raise ValueError(f"a threshold must be positive to bin scores under it, not {threshold}")
    ratio = max(0.0, score) / threshold
    return min(TOP_BIN, math.floor(ratio * BINS_PER_THRESHOLD))


def bin_top(index: int, threshold: float) -> float:
    """The upper edge of bin `index` under `threshold`: every score counted in it is below."""
    return (index + 1) * threshold / BINS_PER_THRESHOLD


def bin_field(judged: Judged, index: int) -> str:
    """The hash field of a bin: `ok:<bin>` or `ng:<bin>`."""
    return f"{judged}:{index}"


def parse_bin_field(name: str) -> tuple[Judged, int] | None:
    """(judged, bin) of a hash field; None for a field this version does not know."""
    judged, _, index = name.partition(":")
    if judged not in ("ok", "ng") or not index.isdigit() or int(index) > TOP_BIN:
        return None
    return judged, int(index)  # type: ignore[return-value]


class PartFinding(BaseModel):
    """An operator's finding on a flagged part: it was fine, or it was defective."""

    model_config = ConfigDict(extra="ignore")

    frame_id: FrameId
    line: Name
    product: Name
    model_version: str
    score: float
    threshold: float
    finding: Finding
    who: str = Field(description="The operator who said so.")
    when: UtcDatetime
    schema_version: Literal[1] = LIVE_SCORES_SCHEMA_VERSION
