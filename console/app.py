"""The operator console's web application: server-rendered pages, event streams, actions.

`create_app` wires the pieces (settings, the planes, the live hub and its feed)
so a test can run the same application on stand-ins or on the real stack. Pages
are Jinja templates rendered here; the two live parts (verdicts, a retrain's
status) are server-sent event streams whose events carry HTML fragments rendered
by the same templates, which `static/console.js` puts in place. No front-end build.

Every GET only reads. Every POST changes the line and passes `authorize`: the
origin check, a login, and the session's CSRF token (`console.auth`), else 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Forbidden,
    Session,
    SessionSigner,
    check_credentials,
    check_csrf,
    check_origin,
    safe_next,
)
from console.live import VerdictFeed, VerdictHub
from console.plant import ActionError, ConsolePlanes, PlaneDown
from console.settings import ConsoleSettings
from planes.logs import get_logger
from schemas.common import FRAME_ID_PATTERN, NAME_PATTERN
from schemas.control import RetrainOutcome
from schemas.object_layout import HEATMAP_PREFIX, parse_dated_key
from schemas.verdicts import Verdict

log = get_logger(__name__)

HERE = Path(__file__).parent
#: Retrain statuses after which nothing changes any more.
FINAL = frozenset({"released", "refused", "failed"})
#: Retrain request ids are Redis stream ids.
REQUEST_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
#: Release versions are file names in the bucket.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: How often a retrain's status is re-read for its event stream.
STATUS_POLL_S = 1.0

#: Scripts, styles and images from the console only; no framing (the buttons act).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response (pure ASGI: streams pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


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
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    signer = SessionSigner(session_secret(settings), settings.session_max_age_s)
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = lambda t: t.strftime("%H:%M:%S") if t else ""
    env.filters["stamp"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""
    env.filters["number"] = _number
    env.globals["image_url"] = image_url
    env.globals["csrf_field"] = CSRF_FIELD

    # --- sessions ------------------------------------------------------------------------

    def load(request: Request) -> tuple[Session, bool]:
        """The request's session, or a new anonymous one (True: it must be sent back)."""
        session = signer.loads(request.cookies.get(SESSION_COOKIE))
        return (session, False) if session is not None else (Session.new(), True)

    def store(response: Response, session: Session) -> Response:
        response.set_cookie(
            SESSION_COOKIE,
            signer.dumps(session),
            max_age=settings.session_max_age_s,
            httponly=True,
            samesite="strict",
            secure=settings.cookie_secure,
            path="/",
        )
        return response

    def may_view(session: Session) -> bool:
        return session.logged_in or settings.read_only_view

    def page(request: Request, name: str, **context: Any) -> Response:
        """A full page for a viewer; the login page for anyone else."""
        session, fresh = load(request)
        if not may_view(session):
            target = f"/login?next={request.url.path}"
            return store(RedirectResponse(target, status_code=303), session)
        notice = session.notice
        html = env.get_template(name).render(
            session=session, notice=notice, read_only=not session.logged_in, **context
        )
        response = HTMLResponse(html)
        if fresh or notice is not None:
            store(response, session.with_notice(None))
        return response

    def done(session: Session, notice: str, to: str) -> Response:
        """Post/redirect/get: the action's result is shown once, on the next page."""
        # the notice rides in the cookie: keep it well inside a browser's 4 kB per cookie
        return store(RedirectResponse(to, status_code=303), session.with_notice(notice[:300]))

    def authorize(request: Request, token: str | None) -> Session:
        """The session of a POST that may change the line, else Forbidden (403)."""
        check_origin(
            request.headers.get("origin"),
            request.headers.get("referer"),
            request.headers.get("host"),
            settings.allowed_origins,
        )
        session, _ = load(request)
        if not session.logged_in:
            raise Forbidden("login required")
        check_csrf(session, token)
        return session

    @app.exception_handler(Forbidden)
    async def refused(request: Request, exc: Forbidden) -> Response:
        log.warning(
            "console request refused",
            path=request.url.path,
            reason=str(exc),
            client=request.client.host if request.client else None,
        )
        html = env.get_template("refused.html").render(
            session=None, reason=str(exc), read_only=True, notice=None
        )
        return HTMLResponse(html, status_code=403)

    # --- login ---------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/") -> Response:
        session, fresh = load(request)
        html = env.get_template("login.html").render(
            session=session, next=safe_next(next), error=None, read_only=True, notice=None
        )
        response = HTMLResponse(html)
        return store(response, session) if fresh else response

    @app.post("/login")
    async def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        next: str = Form("/"),
        csrf_token: str = Form(""),
    ) -> Response:
        check_origin(
            request.headers.get("origin"),
            request.headers.get("referer"),
            request.headers.get("host"),
            settings.allowed_origins,
        )
        session = signer.loads(request.cookies.get(SESSION_COOKIE))
        check_csrf(session, csrf_token)
        if not check_credentials(username, password, settings.username, settings.password):
            log.warning(
                "console login refused",
                user=username[:64],
                client=request.client.host if request.client else None,
            )
            html = env.get_template("login.html").render(
                session=session,
                next=safe_next(next),
                error="Wrong user name or password.",
                read_only=True,
                notice=None,
            )
            return HTMLResponse(html, status_code=401)
        log.info("console login", user=username)
        # a fresh session and token: nothing seen before the login is worth anything after it
        return store(
            RedirectResponse(safe_next(next), status_code=303), Session.new(user=settings.username)
        )

    @app.post("/logout")
    async def logout(request: Request, csrf_token: str = Form("")) -> Response:
        authorize(request, csrf_token)
        return store(RedirectResponse("/login", status_code=303), Session.new())

    # --- live verdicts and the NG gallery --------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def live(request: Request) -> Response:
        return page(
            request,
            "live.html",
            nav="live",
            lines=hub.lines(),
            gallery=hub.gallery(),
            gallery_size=hub.gallery_size,
            feed=hub.feed,
            filed=hub.filed,
            workers=_safely(planes.heartbeats),
        )

    @app.get("/events")
    async def events(request: Request) -> Response:
        session, _ = load(request)
        if not may_view(session):
            raise Forbidden("login required to watch the line")

        async def stream() -> AsyncIterator[str]:
            async with hub.subscribe() as queue:
                yield "retry: 3000\n: connected\n\n"
                while True:
                    try:
                        first = await asyncio.wait_for(queue.get(), settings.keepalive_s)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    # whatever queued meanwhile goes out together: each line once, each NG once
                    batch = [first]
                    while not queue.empty():
                        batch.append(queue.get_nowait())
                    for event in verdict_events(batch, session):
                        yield event

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_CACHE)

    def verdict_events(batch: list[Verdict], session: Session) -> list[str]:
        """`line` events (a line's section, rendered once per batch) and `ng` events (cards)."""
        events = []
        for line in dict.fromkeys(v.line for v in batch):
            recent, ok, ng = hub.line(line)
            section = env.get_template("_line.html").render(
                line=line, verdicts=recent, ok=ok, ng=ng
            )
            events.append(_event("line", {"line": line, "html": section}))
        cards = {v.frame_id: v for v in batch if v.result == "ng"}  # a replay: once
        for verdict in list(cards.values())[-hub.gallery_size :]:
            card = env.get_template("_ng_card.html").render(
                v=verdict, session=session, read_only=not session.logged_in, filed=hub.filed
            )
            events.append(_event("ng", {"frame_id": verdict.frame_id, "html": card}))
        return events

    @app.get("/images/{line}/{day}/{frame_id}/{kind}")
    def image(request: Request, line: str, day: str, frame_id: str, kind: str) -> Response:
        session, _ = load(request)
        if not may_view(session):
            raise Forbidden("login required to see heatmaps")
        try:
            when = date.fromisoformat(day)
        except ValueError:
            return Response(status_code=404)
        names_ok = re.match(NAME_PATTERN, line) and re.match(FRAME_ID_PATTERN, frame_id)
        if not names_ok or kind not in ("heatmap", "original"):
            return Response(status_code=404)
        read = planes.heatmap if kind == "heatmap" else planes.original
        found = read(line, when, frame_id)
        if found is None:
            return Response(status_code=404, headers=_NO_CACHE)
        # replays overwrite with the same picture, so a short private cache is safe
        return Response(
            found.data,
            media_type=found.content_type,
            headers={"cache-control": "private, max-age=300"},
        )

    @app.post("/frames/{frame_id}/mark-good")
    def mark_good(
        request: Request, frame_id: str, line: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        session = authorize(request, csrf_token)
        if not re.match(FRAME_ID_PATTERN, frame_id) or not re.match(NAME_PATTERN, line):
            return done(session, "Not a frame of a line.", "/")
        try:
            key = planes.mark_good(frame_id, line)
        except ActionError as exc:
            return done(session, f"Not filed: {exc}", "/")
        except PlaneDown as exc:
            return done(session, unavailable("Not filed", exc), "/")
        hub.mark_filed(frame_id, key)
        log.info("frame filed as normal", frame_id=frame_id, key=key, user=session.user)
        return done(session, f"Frame {frame_id} filed as a normal: {key}", "/")

    # --- releases ------------------------------------------------------------------------

    @app.get("/releases", response_class=HTMLResponse)
    def releases_page(request: Request) -> Response:
        return page(request, "releases.html", nav="releases", releases=_safely(planes.releases))

    @app.post("/releases/activate")
    def activate(request: Request, version: str = Form(""), csrf_token: str = Form("")) -> Response:
        session = authorize(request, csrf_token)
        if not VERSION.match(version):
            return done(session, "Not a release version.", "/releases")
        try:
            current = planes.activate(version)
        except ActionError as exc:
            return done(session, f"Not activated: {exc}", "/releases")
        except PlaneDown as exc:
            return done(session, unavailable("Not activated", exc), "/releases")
        log.info("release activated from the console", version=current, user=session.user)
        return done(session, f"Release {current} is now current.", "/releases")

    @app.post("/releases/rollback")
    def rollback(request: Request, csrf_token: str = Form("")) -> Response:
        session = authorize(request, csrf_token)
        try:
            current = planes.rollback()
        except ActionError as exc:
            return done(session, f"Not rolled back: {exc}", "/releases")
        except PlaneDown as exc:
            return done(session, unavailable("Not rolled back", exc), "/releases")
        log.info("release rolled back from the console", version=current, user=session.user)
        return done(session, f"Rolled back: release {current} is now current.", "/releases")

    # --- retraining ----------------------------------------------------------------------

    @app.get("/retrain", response_class=HTMLResponse)
    def retrain_page(request: Request) -> Response:
        entries = _safely(lambda: planes.recent_retrains(10))
        return page(request, "retrain.html", nav="retrain", entries=entries)

    @app.post("/retrain")
    def retrain(request: Request, reason: str = Form(""), csrf_token: str = Form("")) -> Response:
        session = authorize(request, csrf_token)
        reason = " ".join(reason.split())[:500]
        if not reason:
            return done(session, "Say why the model should be retrained.", "/retrain")
        try:
            request_id = planes.request_retrain(reason, who=f"{session.user}@console")
        except PlaneDown as exc:
            return done(session, unavailable("Not requested", exc), "/retrain")
        log.info("retrain requested from the console", request_id=request_id, user=session.user)
        return done(session, f"Retrain requested: {request_id}", f"/retrain/{request_id}")

    @app.get("/retrain/{request_id}", response_class=HTMLResponse)
    def retrain_status(request: Request, request_id: str) -> Response:
        if not REQUEST_ID.match(request_id):
            return Response(status_code=404)
        try:
            outcome, final = planes.retrain(request_id), False
            final = outcome is None or outcome.status in FINAL
        except PlaneDown as exc:  # the event stream keeps trying
            log.warning("console: retrain status unavailable", error=str(exc))
            outcome = None
        return page(
            request,
            "retrain_status.html",
            nav="retrain",
            request_id=request_id,
            outcome=outcome,
            final=final,
        )

    @app.get("/retrain/{request_id}/events")
    async def retrain_events(request: Request, request_id: str) -> Response:
        session, _ = load(request)
        if not may_view(session):
            raise Forbidden("login required to follow a retrain")
        if not REQUEST_ID.match(request_id):
            return Response(status_code=404)

        async def stream() -> AsyncIterator[str]:
            shown = None
            yield "retry: 3000\n: connected\n\n"
            while True:
                outcome: RetrainOutcome | None = await run_in_threadpool(planes.retrain, request_id)
                html = env.get_template("_retrain_status.html").render(
                    request_id=request_id, outcome=outcome
                )
                final = outcome is None or outcome.status in FINAL
                if html != shown:
                    shown = html
                    yield _event("status", {"html": html, "final": final})
                if final:
                    return
                await asyncio.sleep(STATUS_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_CACHE)

    # --- workers -------------------------------------------------------------------------

    @app.get("/workers", response_class=HTMLResponse)
    def workers_page(request: Request) -> Response:
        return page(request, "workers.html", nav="workers", workers=_safely(planes.heartbeats))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "feed_connected": hub.feed.connected}

    return app


_NO_CACHE = {"cache-control": "no-store", "x-accel-buffering": "no"}


def _event(name: str, data: dict[str, Any]) -> str:
    """One server-sent event; JSON keeps the payload on one `data:` line."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def unavailable(what: str, exc: BaseException) -> str:
    """The notice of an action that could not reach Redis or S3 (logged with the cause)."""
    log.warning("console action failed: plane unavailable", action=what, error=str(exc))
    return f"{what}: Redis or S3 did not answer; try again."


def _safely(read: Callable[[], list]) -> list | None:
    """A read for a side panel; None (shown as 'unavailable') when its plane is down."""
    try:
        return read()
    except Exception as exc:  # a side panel must not take the page down with it
        log.warning("console: side panel unavailable", error=str(exc))
        return None


def image_url(verdict: Verdict, kind: str) -> str | None:
    """The console's URL of a verdict's heatmap or original (never an S3 URL)."""
    parsed = parse_dated_key(verdict.heatmap_key) if verdict.heatmap_key else None
    if parsed is None or parsed.prefix != HEATMAP_PREFIX:
        return None
    return f"/images/{parsed.group}/{parsed.day}/{verdict.frame_id}/{kind}"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"
