"""An NG frame's pictures, served by the console, "this part was fine" and "confirmed defective".

The browser never gets an S3 URL: the console reads the heatmap or the original
from the bucket for a viewer, after checking every part of the path, so no key
outside a line's dated heatmaps and frames can be asked for.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import Response

from console.auth import Session
from console.pages.common import NO_CACHE, NOT_DONE, Console, Operator, viewer
from planes.logs import get_logger
from schemas.common import FRAME_ID_PATTERN, NAME_PATTERN

log = get_logger(__name__)
router = APIRouter()


@router.get("/images/{line}/{day}/{frame_id}/{kind}")
def image(
    console: Console,
    _: Annotated[Session, Depends(viewer("see heatmaps"))],
    line: str,
    day: str,
    frame_id: str,
    kind: str,
) -> Response:
    try:
        when = date.fromisoformat(day)
    except ValueError:
        return Response(status_code=404)
    names_ok = re.match(NAME_PATTERN, line) and re.match(FRAME_ID_PATTERN, frame_id)
    if not names_ok or kind not in ("heatmap", "original"):
        return Response(status_code=404)
    read = console.planes.heatmap if kind == "heatmap" else console.planes.original
    found = read(line, when, frame_id)
    if found is None:
        return Response(status_code=404, headers=NO_CACHE)
    # replays overwrite with the same picture, so a short private cache is safe
    return Response(
        found.data,
        media_type=found.content_type,
        headers={"cache-control": "private, max-age=300"},
    )


@router.post("/frames/{frame_id}/mark-good")
def mark_good(
    console: Console, session: Operator, frame_id: str, line: Annotated[str, Form()] = ""
) -> Response:
    """File the frame's original as a normal for the next retrain (`kenpin-trainer mark-good`)."""
    if not re.match(FRAME_ID_PATTERN, frame_id) or not re.match(NAME_PATTERN, line):
        return console.done(session, "Not a frame of a line.", "/")
    try:
        key = console.planes.mark_good(frame_id, line)
    except NOT_DONE as exc:
        return console.not_done(session, "Not filed", exc, "/")
    console.hub.mark_filed(frame_id, key)
    log.info("frame filed as normal", frame_id=frame_id, key=key, user=session.user)
    notice = f"Frame {frame_id} filed as a normal: {key}"
    verdict = console.hub.find(frame_id)
    if verdict is not None and verdict.result == "ng":
        try:
            console.planes.record_finding(verdict, "fine", f"{session.user}@console")
        except NOT_DONE as exc:
            log.warning("finding not recorded", frame_id=frame_id, error=str(exc))
            notice += "; the finding for the line's threshold was not recorded: file it again"
    return console.done(session, notice, "/")


@router.post("/frames/{frame_id}/confirm-ng")
def confirm_ng(
    console: Console, session: Operator, frame_id: str, line: Annotated[str, Form()] = ""
) -> Response:
    """An operator confirms a flagged part was defective: a line's own threshold that would
    let it pass is refused (`operations.line_calibration`)."""
    if not re.match(FRAME_ID_PATTERN, frame_id) or not re.match(NAME_PATTERN, line):
        return console.done(session, "Not a frame of a line.", "/")
    verdict = console.hub.find(frame_id)
    if verdict is None or verdict.line != line or verdict.result != "ng":
        return console.done(session, f"Frame {frame_id} is not a recent NG part of {line}.", "/")
    try:
        console.planes.record_finding(verdict, "defective", f"{session.user}@console")
    except NOT_DONE as exc:
        return console.not_done(session, "Not recorded", exc, "/")
    console.hub.mark_confirmed(frame_id)
    log.info("NG part confirmed defective", frame_id=frame_id, user=session.user)
    return console.done(session, f"Frame {frame_id} recorded as confirmed defective.", "/")
