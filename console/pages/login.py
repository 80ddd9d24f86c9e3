"""Logging in and out: the one operator login of the settings (`console.auth`).

The login form is a POST like the actions: it passes the same origin check
(`same_site`) and carries its anonymous session's CSRF token, so a foreign page
can neither post it nor log a browser into the console. A login draws a new
session and token; a logout an anonymous one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.auth import Session, check_credentials, check_csrf, safe_next
from console.pages.common import Console, Operator, Visitor, same_site
from planes.logs import get_logger

log = get_logger(__name__)
router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
async def login_page(console: Console, visit: Visitor, next: str = "/") -> Response:
    html = console.render(
        "login.html",
        session=visit.session,
        next=safe_next(next),
        error=None,
        read_only=True,
        notice=None,
    )
    response = HTMLResponse(html)
    return console.store(response, visit.session) if visit.fresh else response


@router.post("/login", dependencies=[Depends(same_site)])
async def login(
    request: Request,
    console: Console,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    session = console.session_of(request)
    check_csrf(session, csrf_token)
    settings = console.settings
    if not check_credentials(username, password, settings.username, settings.password):
        log.warning(
            "console login refused",
            user=username[:64],
            client=request.client.host if request.client else None,
        )
        html = console.render(
            "login.html",
            session=session,
            next=safe_next(next),
            error="Wrong user name or password.",
            read_only=True,
            notice=None,
        )
        return HTMLResponse(html, status_code=401)
    log.info("console login", user=username)
    # a fresh session and token: nothing seen before the login is worth anything after it
    return console.store(
        RedirectResponse(safe_next(next), status_code=303), Session.new(user=settings.username)
    )


@router.post("/logout")
async def logout(console: Console, _: Operator) -> Response:
    return console.store(RedirectResponse("/login", status_code=303), Session.new())
