"""The line's own thresholds: what each line judged, today's threshold, and a proposal.

Per line and product of the serving release: a histogram of the line's normal
scores (OK frames and NG parts found fine) with today's threshold and the one
proposed at the target false-alarm rate, the rate each gives (measured for
today's, promised for the proposal, both with a 95 % interval), the NG parts
nobody reviewed yet, and the parts confirmed defective that the change would
let pass. Applying a proposal asks a trainer for a release through the gate
(`operations.line_calibration`, `trainer.service.line_gate`): the page changes
nothing on the line by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, Response

from console.pages.common import NOT_DONE, Console, Operator, PageViewer
from console.plant import PlaneUnavailable
from planes.logs import get_logger
from schemas.common import NAME_PATTERN
from schemas.live_scores import BINS_PER_THRESHOLD

if TYPE_CHECKING:
    from operations.line_calibration import Proposal

log = get_logger(__name__)
router = APIRouter()

#: The histogram's size in SVG units, and its bars.
WIDTH, HEIGHT, BARS = 720, 180, 72
#: Target rates an operator may ask for, in percent.
TARGET_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class Histogram:
    """One line's normal scores as SVG shapes: bars, the two thresholds, confirmed defects."""

    bars: list[tuple[float, float, float, float, int]]  # x, y, width, height, count
    today_x: float
    proposed_x: float | None
    defects: list[tuple[float, str]]  # x, frame id
    top: float  # the score at the right edge
    ticks: list[tuple[float, str]]


def histogram(proposal: Proposal) -> Histogram:
    """The normals' counts regrouped into `BARS` bars up to a little past every mark; the
    bars' heights on a square-root scale, so the tail that sets a threshold stays visible."""
    evidence = proposal.evidence
    counts = evidence.normals()
    unit = evidence.product_threshold / BINS_PER_THRESHOLD  # a stored bin's width in score
    filled = np.flatnonzero(counts)
    marks = [proposal.today, *(f.score for f in evidence.defective)]
    if proposal.threshold is not None:
        marks.append(proposal.threshold)
    if len(filled):
        marks.append((filled[-1] + 1) * unit)
    top = max(marks) * 1.08 or 1.0
    edges = np.linspace(0.0, top, BARS + 1)
    centres = (np.arange(len(counts)) + 0.5) * unit
    grouped, _ = np.histogram(centres, bins=edges, weights=counts)
    tallest = max(1.0, float(np.sqrt(grouped.max(initial=0))))
    step = WIDTH / BARS
    bars = []
    for i, count in enumerate(grouped):
        height = (HEIGHT - 24) * float(np.sqrt(count)) / tallest
        bars.append((i * step, HEIGHT - 16 - height, step - 1, height, int(count)))

    def x(score: float) -> float:
        return WIDTH * min(score, top) / top

    ticks = [(x(v), f"{v:.3g}") for v in np.linspace(0, top, 5)[1:]]
    return Histogram(
        bars=bars,
        today_x=x(proposal.today),
        proposed_x=None if proposal.threshold is None else x(proposal.threshold),
        defects=[(x(f.score), f.frame_id) for f in evidence.defective],
        top=top,
        ticks=ticks,
    )


def _target(percent: str | None) -> float | None:
    """A target in percent from a form, as a rate; None for none or one out of range."""
    try:
        value = float(percent) if percent else None
    except ValueError:
        return None
    if value is None or not TARGET_RANGE[0] <= value <= TARGET_RANGE[1]:
        return None
    return value / 100


@router.get("/calibration", response_class=HTMLResponse)
def calibration_page(console: Console, visit: PageViewer, target: str | None = None) -> Response:
    rate = _target(target)
    try:
        proposals = console.planes.line_proposals(rate)
    except PlaneUnavailable as exc:
        log.warning("console: line evidence unavailable", error=str(exc))
        proposals = None
    return console.page(
        visit,
        "calibration.html",
        nav="calibration",
        proposals=proposals,
        views=[(p, histogram(p)) for p in proposals or []],
        target=target if rate is not None else "",
        target_range=TARGET_RANGE,
    )


@router.post("/calibration")
def request_line_threshold(
    console: Console,
    session: Operator,
    line: Annotated[str, Form()] = "",
    product: Annotated[str, Form()] = "",
    target: Annotated[str, Form()] = "",
) -> Response:
    """Ask a trainer for a release with this line's own threshold (through the gate)."""
    rate = _target(target)
    if not re.match(NAME_PATTERN, line) or not re.match(NAME_PATTERN, product) or rate is None:
        low, high = TARGET_RANGE
        return console.done(
            session, f"Name a line, a product and a target of {low} to {high} %.", "/calibration"
        )
    try:
        request_id = console.planes.request_line_threshold(
            line, product, rate, who=f"{session.user}@console"
        )
    except NOT_DONE as exc:
        return console.not_done(session, "Not requested", exc, "/calibration")
    log.info(
        "line threshold requested from the console",
        request_id=request_id,
        line=line,
        product=product,
        target=rate,
        user=session.user,
    )
    return console.done(
        session, f"Line threshold requested: {request_id}", f"/retrain/{request_id}"
    )
