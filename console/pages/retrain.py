"""Retraining: ask for a retrain, list the recent requests, follow one request's status.

A request goes onto the retrain stream in Redis (`kenpin-trainer retrain`); a
trainer takes it and records its outcome there, which `/retrain/{id}/events`
re-reads every `STATUS_POLL_S` and sends as a rendered fragment whenever it
changes, until the request reaches a final status. While Redis does not answer,
the page and its stream say so and the stream keeps polling: the status shows
up again by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from console.auth import Session
from console.pages.common import (
    NO_CACHE,
    NOT_DONE,
    Console,
    Operator,
    PageViewer,
    safely,
    sse,
    unavailable,
    viewer,
)
from console.plant import PlaneUnavailable
from planes.logs import get_logger

log = get_logger(__name__)
router = APIRouter()

#: Retrain request ids are Redis stream ids.
REQUEST_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
#: How often a retrain's status is re-read for its event stream.
STATUS_POLL_S = 1.0
#: What the status says while Redis does not answer.
STATUS_UNAVAILABLE = unavailable("Retrain status")
#: The fragments the status is shown in (on the page, and in each `status` event).
STATUS, UNAVAILABLE = "_retrain_status.html", "_retrain_unavailable.html"


@router.get("/retrain", response_class=HTMLResponse)
def retrain_page(console: Console, visit: PageViewer) -> Response:
    entries = safely(lambda: console.planes.recent_retrains(10))
    return console.page(visit, "retrain.html", nav="retrain", entries=entries)


@router.post("/retrain")
def retrain(console: Console, session: Operator, reason: Annotated[str, Form()] = "") -> Response:
    reason = " ".join(reason.split())[:500]
    if not reason:
        return console.done(session, "Say why the model should be retrained.", "/retrain")
    try:
        request_id = console.planes.request_retrain(reason, who=f"{session.user}@console")
    except NOT_DONE as exc:
        return console.not_done(session, "Not requested", exc, "/retrain")
    log.info("retrain requested from the console", request_id=request_id, user=session.user)
    return console.done(session, f"Retrain requested: {request_id}", f"/retrain/{request_id}")


@router.get("/retrain/{request_id}", response_class=HTMLResponse)
def retrain_status(console: Console, visit: PageViewer, request_id: str) -> Response:
    """The request's status; 503 saying "try again" while Redis does not answer."""
    if not REQUEST_ID.match(request_id):
        return Response(status_code=404)
    try:
        outcome = console.planes.retrain(request_id)
    except PlaneUnavailable as exc:  # the page's event stream keeps trying
        log.warning("console: retrain status unavailable", request_id=request_id, error=str(exc))
        return console.page(
            visit,
            "retrain_status.html",
            status_code=503,
            nav="retrain",
            request_id=request_id,
            outcome=None,
            final=False,
            problem=STATUS_UNAVAILABLE,
        )
    return console.page(
        visit,
        "retrain_status.html",
        nav="retrain",
        request_id=request_id,
        outcome=outcome,
        final=outcome is None or outcome.final,
        problem=None,
    )


@router.get("/retrain/{request_id}/events")
async def retrain_events(
    console: Console,
    _: Annotated[Session, Depends(viewer("follow a retrain"))],
    request_id: str,
) -> Response:
    """The status fragment whenever it changes, until it is final; Redis outages ridden out."""
    if not REQUEST_ID.match(request_id):
        return Response(status_code=404)

    async def stream() -> AsyncIterator[str]:
        shown = None
        yield "retry: 3000\n: connected\n\n"
        while True:
            try:
                outcome = await run_in_threadpool(console.planes.retrain, request_id)
            except PlaneUnavailable as exc:  # said once per outage, then polled on
                html, final = console.render(UNAVAILABLE, problem=STATUS_UNAVAILABLE), False
                if html != shown:
                    log.warning("console: retrain status unavailable", error=str(exc))
            else:
                html = console.render(STATUS, request_id=request_id, outcome=outcome)
                final = outcome is None or outcome.final
            if html != shown:
                shown = html
                yield sse("status", {"html": html, "final": final})
            if final:
                return
            await asyncio.sleep(STATUS_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=NO_CACHE)
