"""The console's web application: the pages (`console.pages`) wired onto one FastAPI app.

`create_app` wires the pieces (settings, the planes, the live hub and its feed)
so a test can run the same application on stand-ins or on the real stack. Pages
are Jinja templates rendered on the server; the two live parts (verdicts, a
retrain's status) are server-sent event streams whose events carry HTML
fragments rendered by the same templates, which `static/console.js` puts in
place. No front-end build.

Every GET only reads. Every POST changes the line and passes the `Operator`
dependency: the origin check, a login, and the session's CSRF token
(`console.auth`), else 403.

This module loads no client library (kafka, redis, minio) and no torch: the
feed imports kafka-python when it starts, and the real planes
(`console.plant_clients`) are made by `console.cli`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from console.auth import Forbidden, SessionSigner
from console.pages import calibration, images, live, login, releases, retrain, workers
from console.pages.common import ConsoleContext, LoginNeeded
from console.pages.rendering import environment
from console.security_headers import SecurityHeaders
from planes.logs import get_logger

if TYPE_CHECKING:
    from console.live import VerdictFeed, VerdictHub
    from console.plant import ConsolePlanes
    from console.settings import ConsoleSettings

log = get_logger(__name__)

STATIC = Path(__file__).parent / "static"
#: Every page of the console: each module's `router`.
PAGES = (live, images, releases, retrain, calibration, workers, login)


def session_secret(settings: ConsoleSettings) -> bytes:
    """The configured signing key, or a random one for this run (sessions end at restart)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    log.warning(
        "no session secret configured: a random one signs this run's sessions; "
        "operators log in again after a restart"
    )
    return secrets.token_bytes(32)


def create_app(
    settings: ConsoleSettings,
    planes: ConsolePlanes,
    hub: VerdictHub,
    feed: VerdictFeed | None = None,
) -> FastAPI:
    """The console on `planes`, showing what `hub` holds; `feed` runs while the app runs."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if feed is not None:
            feed.start()
        try:
            yield
        finally:
            if feed is not None:
                await run_in_threadpool(feed.stop)

    app = FastAPI(
        title="kenpin console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.console = ConsoleContext(
        settings=settings,
        planes=planes,
        hub=hub,
        signer=SessionSigner(session_secret(settings), settings.session_max_age_s),
        templates=environment(),
    )
    app.add_exception_handler(Forbidden, refused)
    app.add_exception_handler(LoginNeeded, to_login)
    for page in PAGES:
        app.include_router(page.router)
    return app


async def refused(request: Request, exc: Forbidden) -> Response:
    """403 with the refusal page; the reason is logged with the client."""
    log.warning(
        "console request refused",
        path=request.url.path,
        reason=str(exc),
        client=request.client.host if request.client else None,
    )
    console: ConsoleContext = request.app.state.console
    html = console.render(
        "refused.html", session=None, reason=str(exc), read_only=True, notice=None
    )
    return HTMLResponse(html, status_code=403)


async def to_login(request: Request, exc: LoginNeeded) -> Response:
    """A page for a visitor who may not view it: to the login page, and back here after it."""
    console: ConsoleContext = request.app.state.console
    target = f"/login?next={request.url.path}"
    return console.store(RedirectResponse(target, status_code=303), exc.session)
