"""The workers page: each worker's last heartbeat and the release it serves.

What `kenpin-trainer workers` lists; the page refreshes itself (no event stream).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from console.pages.common import Console, PageViewer, safely

router = APIRouter()


@router.get("/workers", response_class=HTMLResponse)
def workers_page(console: Console, visit: PageViewer) -> Response:
    workers = safely(console.planes.heartbeats)
    return console.page(visit, "workers.html", nav="workers", workers=workers)
