"""The live page: every line's recent verdicts and the NG gallery, kept current by `/events`.

`/events` is a server-sent event stream: a `line` event carries a line's section
rendered again, an `ng` event a gallery card, both by the templates the page
itself was rendered with (`static/console.js` puts them in place).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from console.auth import Session
from console.pages.common import NO_CACHE, Console, PageViewer, safely, sse, viewer

if TYPE_CHECKING:
    from console.pages.common import ConsoleContext
    from schemas.verdicts import Verdict

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def live(console: Console, visit: PageViewer) -> Response:
    hub = console.hub
    return console.page(
        visit,
        "live.html",
        nav="live",
        lines=hub.lines(),
        gallery=hub.gallery(),
        gallery_size=hub.gallery_size,
        feed=hub.feed,
        filed=hub.filed,
        confirmed=hub.confirmed,
        workers=safely(console.planes.heartbeats),
    )


@router.get("/events")
async def events(
    console: Console, session: Annotated[Session, Depends(viewer("watch the line"))]
) -> Response:
    """New verdicts as they arrive, batched: each line's section once, each NG card once."""
    hub = console.hub

    async def stream() -> AsyncIterator[str]:
        async with hub.subscribe() as queue:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), console.settings.keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                # whatever queued meanwhile goes out together: each line once, each NG once
                batch = [first]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                for event in verdict_events(console, batch, session):
                    yield event

    return StreamingResponse(stream(), media_type="text/event-stream", headers=NO_CACHE)


def verdict_events(console: ConsoleContext, batch: list[Verdict], session: Session) -> list[str]:
    """`line` events (a line's section, rendered once per batch) and `ng` events (cards)."""
    hub = console.hub
    events = []
    for line in dict.fromkeys(v.line for v in batch):
        recent, ok, ng = hub.line(line)
        section = console.render("_line.html", line=line, verdicts=recent, ok=ok, ng=ng)
        events.append(sse("line", {"line": line, "html": section}))
    cards = {v.frame_id: v for v in batch if v.result == "ng"}  # a replay: once
    for verdict in list(cards.values())[-hub.gallery_size :]:
        card = console.render(
            "_ng_card.html",
            v=verdict,
            session=session,
            read_only=not session.logged_in,
            filed=hub.filed,
            confirmed=hub.confirmed,
        )
        events.append(sse("ng", {"frame_id": verdict.frame_id, "html": card}))
    return events


@router.get("/healthz")
def healthz(console: Console) -> dict[str, Any]:
    """For a load balancer or a supervisor: the process answers; is its feed connected?"""
    return {"ok": True, "feed_connected": console.hub.feed.connected}
