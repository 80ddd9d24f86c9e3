"""Who may change the line from the console: login, signed session cookies, CSRF checks.

The console has one operator login (user and password from settings). A session is
a cookie the console signs itself (HMAC-SHA256 over the JSON payload; no session
store, so nothing to lose or to share between restarts but the key):

- every visitor gets a session, logged in or not, holding a random CSRF token (the
  synchronizer token) that every form carries back; a POST whose token does not
  match its session's is refused (403), and so is one whose `Origin` (or `Referer`)
  is another site. The login form is protected the same way, so a foreign page
  cannot log a browser into the console either;
- the cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's
  page sends it) and, behind TLS, Secure;
- logging in draws a new session and token (a token seen before the login is
  worthless after it), and passwords are compared in constant time over their
  SHA-256 digests, so neither the password nor its length leaks through timing.

A logged-out cookie is not revoked server-side (there is no store): it stops being
accepted once `session_max_age_s` has passed since the login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from pydantic import SecretStr

#: Name of the session cookie.
SESSION_COOKIE = "kenpin_console_session"
#: Name of the form field that carries the CSRF token.
CSRF_FIELD = "csrf_token"


class Forbidden(Exception):
    """A request that must be refused with 403, and why (logged, not shown in detail)."""


@dataclass(frozen=True)
class Session:
    """One browser's session: who is logged in (None: nobody), its CSRF token, a notice."""

    csrf: str
    user: str | None = None
    issued: float = 0.0
    notice: str | None = None

    @property
    def logged_in(self) -> bool:
        return self.user is not None

    @classmethod
    def new(cls, user: str | None = None) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), user=user, issued=time.time())

    def with_notice(self, notice: str | None) -> Session:
        """The same session carrying a one-line message for the next page (post/redirect/get)."""
        return replace(self, notice=notice)


class SessionSigner:
    """Session <-> cookie value: `base64url(JSON).base64url(HMAC-SHA256)`, with an expiry."""

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._key = hashlib.sha256(b"kenpin-console session\x00" + secret).digest()
        self.max_age_s = max_age_s

    def dumps(self, session: Session) -> str:
        payload = json.dumps(
            {"c": session.csrf, "u": session.user, "t": session.issued, "n": session.notice},
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return f"{body}.{_b64(self._sign(body))}"

    def loads(self, value: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value; None when absent, forged, malformed or expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        try:
            given = _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._sign(body)):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(
                csrf=str(data["c"]),
                user=None if data["u"] is None else str(data["u"]),
                issued=float(data["t"]),
                notice=None if data.get("n") is None else str(data["n"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        current = time.time() if now is None else now
        if not session.csrf or current - session.issued > self.max_age_s:
            return None
        return session

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc


def same_secret(given: str, expected: SecretStr | str) -> bool:
    """Constant-time comparison of a typed secret with the configured one."""
    want = expected.get_secret_value() if isinstance(expected, SecretStr) else expected
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(want.encode()).digest()
    )


def check_credentials(username: str, password: str, want_user: str, want: SecretStr) -> bool:
    """Both compared, always, so a wrong user name takes as long as a wrong password."""
    user_ok = same_secret(username, want_user)
    password_ok = same_secret(password, want)
    return user_ok and password_ok and bool(want.get_secret_value())


def check_csrf(session: Session | None, token: str | None) -> None:
    """Raise Forbidden unless `token` is the session's synchronizer token."""
    if session is None or not token or not hmac.compare_digest(token, session.csrf):
        raise Forbidden("missing or wrong CSRF token")


def check_origin(
    origin: str | None, referer: str | None, host: str | None, allowed: list[str]
) -> None:
    """Raise Forbidden when the request says it comes from another site.

    Browsers send `Origin` with every POST; `Referer` is the fallback. Either must
    name the console's own host (the `Host` the browser sent, which trusted-host
    checking has already vetted) or one of `allowed`. A request naming neither
    (a script, not a browser) is judged by its CSRF token alone.
    """
    source = origin if origin is not None else referer
    if source is None:
        return
    if source == "null":
        raise Forbidden("opaque origin")
    parts = urlsplit(source)
    if not parts.scheme or not parts.netloc:
        raise Forbidden(f"unreadable origin {source!r}")
    if host is not None and parts.netloc.lower() == host.lower():
        return
    if f"{parts.scheme}://{parts.netloc}".lower() in {a.rstrip("/").lower() for a in allowed}:
        return
    raise Forbidden(f"cross-site request from {parts.scheme}://{parts.netloc}")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path of this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
