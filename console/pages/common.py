"""What every page of the console shares: its context, sessions, who may view or act, notices.

Each page module is an `APIRouter` with no state of its own: what an app holds
(settings, planes, hub, session signer, templates) is one `ConsoleContext` on
`app.state.console`, which the `Console` dependency hands to a route, so two
apps in one process (two consoles in a test) never share anything.

Who may do what is said once, as dependencies a route declares:

- `PageViewer`: a page; a visitor who may not view (not logged in, and no
  `read_only_view`) is sent to the login page (`LoginNeeded`, handled by the app);
- `viewer(purpose)`: an event stream or an image; 403 for the same visitor;
- `Operator`: every POST that changes the line: the origin check (`same_site`,
  which the login form passes too), a login, and the session's CSRF token.

An action the planes did not do ends, like every action, in post/redirect/get:
`ConsoleContext.not_done` turns `ActionRefused` and `PlaneUnavailable` into the
notice the next page shows once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.auth import SESSION_COOKIE, Forbidden, Session, check_csrf, check_origin
from console.plant import ActionRefused, PlaneUnavailable
from planes.logs import get_logger

if TYPE_CHECKING:
    from jinja2 import Environment

    from console.auth import SessionSigner
    from console.live import VerdictHub
    from console.plant import ConsolePlanes
    from console.settings import ConsoleSettings

log = get_logger(__name__)

#: What an action the planes did not do raises (`ConsoleContext.not_done` reports it).
NOT_DONE = (ActionRefused, PlaneUnavailable)
#: Event streams and answers that no browser or proxy may keep or hold back.
NO_CACHE = {"cache-control": "no-store", "x-accel-buffering": "no"}
#: A notice rides in the cookie: keep it well inside a browser's 4 kB per cookie.
NOTICE_CHARS = 300


@dataclass(frozen=True)
class Visit:
    """A request's session, and whether it is new (then its cookie must be sent back)."""

    session: Session
    fresh: bool


class LoginNeeded(Exception):
    """A page asked for by a visitor who may not view it: the app sends them to the login."""

    def __init__(self, session: Session) -> None:
        super().__init__("login needed")
        self.session = session


@dataclass(frozen=True)
class ConsoleContext:
    """One console app's shared objects, and the session and page helpers built on them."""

    settings: ConsoleSettings
    planes: ConsolePlanes
    hub: VerdictHub
    signer: SessionSigner
    templates: Environment

    # --- sessions ------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The session the request's cookie carries; None when absent, forged or expired."""
        return self.signer.loads(request.cookies.get(SESSION_COOKIE))

    def visit(self, request: Request) -> Visit:
        """The request's session, or a new anonymous one (marked fresh)."""
        session = self.session_of(request)
        return Visit(session, False) if session is not None else Visit(Session.new(), True)

    def may_view(self, session: Session) -> bool:
        return session.logged_in or self.settings.read_only_view

    def store(self, response: Response, session: Session) -> Response:
        """`response`, setting the session cookie (HttpOnly, SameSite=Strict, Secure by TLS)."""
        response.set_cookie(
            SESSION_COOKIE,
            self.signer.dumps(session),
            max_age=self.settings.session_max_age_s,
            httponly=True,
            samesite="strict",
            secure=self.settings.cookie_secure,
            path="/",
        )
        return response

    # --- pages ---------------------------------------------------------------------------

    def render(self, name: str, **context: Any) -> str:
        return self.templates.get_template(name).render(**context)

    def page(self, visit: Visit, name: str, status_code: int = 200, **context: Any) -> Response:
        """A full page for a viewer, showing (and then dropping) the session's notice."""
        session = visit.session
        notice = session.notice
        html = self.render(
            name, session=session, notice=notice, read_only=not session.logged_in, **context
        )
        response = HTMLResponse(html, status_code=status_code)
        if visit.fresh or notice is not None:
            self.store(response, session.with_notice(None))
        return response

    def done(self, session: Session, notice: str, to: str) -> Response:
        """Post/redirect/get: the action's result is shown once, on the next page."""
        return self.store(
            RedirectResponse(to, status_code=303), session.with_notice(notice[:NOTICE_CHARS])
        )

    def not_done(
        self, session: Session, what: str, exc: ActionRefused | PlaneUnavailable, to: str
    ) -> Response:
        """`done` for an action the planes did not do: refused in its own words, or "try again"."""
        if isinstance(exc, PlaneUnavailable):
            log.warning("console action failed: plane unavailable", action=what, error=str(exc))
            return self.done(session, unavailable(what), to)
        return self.done(session, f"{what}: {exc}", to)


def unavailable(what: str) -> str:
    """What the page says when Redis or S3 did not answer."""
    return f"{what}: Redis or S3 did not answer; try again."


def safely(read: Callable[[], list]) -> list | None:
    """A read for a side panel; None (shown as 'unavailable') when its plane is down."""
    try:
        return read()
    except Exception as exc:  # a side panel must not take the page down with it
        log.warning("console: side panel unavailable", error=str(exc))
        return None


def sse(name: str, data: dict[str, Any]) -> str:
    """One server-sent event; JSON keeps the payload on one `data:` line."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


# --- dependencies ------------------------------------------------------------------------
# async: they only read the request, so they need no trip through the thread pool


async def console_context(request: Request) -> ConsoleContext:
    """The context of the app serving this request (`app.state.console`)."""
    return request.app.state.console


Console = Annotated[ConsoleContext, Depends(console_context)]


async def visitor(request: Request, console: Console) -> Visit:
    """Anyone's session, new if they brought none."""
    return console.visit(request)


Visitor = Annotated[Visit, Depends(visitor)]


async def page_viewer(console: Console, visit: Visitor) -> Visit:
    """The visit of one who may view the pages; anyone else is sent to the login page."""
    if not console.may_view(visit.session):
        raise LoginNeeded(visit.session)
    return visit


PageViewer = Annotated[Visit, Depends(page_viewer)]


def viewer(purpose: str) -> Callable[..., Coroutine[Any, Any, Session]]:
    """A dependency: the session of one who may view; 403 "login required to `purpose`"."""

    async def may_view(console: Console, visit: Visitor) -> Session:
        if not console.may_view(visit.session):
            raise Forbidden(f"login required to {purpose}")
        return visit.session

    return may_view


async def same_site(request: Request, console: Console) -> None:
    """403 when the POST says it comes from another site (`console.auth.check_origin`)."""
    check_origin(
        request.headers.get("origin"),
        request.headers.get("referer"),
        request.headers.get("host"),
        console.settings.allowed_origins,
    )


async def operator(
    request: Request,
    console: Console,
    _: Annotated[None, Depends(same_site)],
    csrf_token: Annotated[str, Form()] = "",  # the form field `console.auth.CSRF_FIELD`
) -> Session:
    """The session of a POST that may change the line: same site, logged in, its token; else 403."""
    session = console.session_of(request)
    if session is None or not session.logged_in:
        raise Forbidden("login required")
    check_csrf(session, csrf_token)
    return session


Operator = Annotated[Session, Depends(operator)]
