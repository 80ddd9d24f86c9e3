"""The releases page: every stored release with its gate report; activate one, or roll back.

The same operations as `kenpin-trainer release activate | rollback`: the workers
pick the new current release up from Redis.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, Response

from console.pages.common import NOT_DONE, Console, Operator, PageViewer, safely
from planes.logs import get_logger

log = get_logger(__name__)
router = APIRouter()

#: Release versions are file names in the bucket.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@router.get("/releases", response_class=HTMLResponse)
def releases_page(console: Console, visit: PageViewer) -> Response:
    releases = safely(console.planes.releases)
    return console.page(visit, "releases.html", nav="releases", releases=releases)


@router.post("/releases/activate")
def activate(console: Console, session: Operator, version: Annotated[str, Form()] = "") -> Response:
    if not VERSION.match(version):
        return console.done(session, "Not a release version.", "/releases")
    try:
        current = console.planes.activate(version)
    except NOT_DONE as exc:
        return console.not_done(session, "Not activated", exc, "/releases")
    log.info("release activated from the console", version=current, user=session.user)
    return console.done(session, f"Release {current} is now current.", "/releases")


@router.post("/releases/rollback")
def rollback(console: Console, session: Operator) -> Response:
    try:
        current = console.planes.rollback()
    except NOT_DONE as exc:
        return console.not_done(session, "Not rolled back", exc, "/releases")
    log.info("release rolled back from the console", version=current, user=session.user)
    return console.done(session, f"Rolled back: release {current} is now current.", "/releases")
