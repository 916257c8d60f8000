"""Who may use the dashboard and whether a form was sent by it: the access token (or the
``auth`` callable of a mounting application), the CSRF token of every form, and the security
headers of every response."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "AuthCallable", "Guard", "security_headers"]

#: decides whether a request may see the dashboard (a mounting application's own login)
AuthCallable: TypeAlias = Callable[[Request], bool | Awaitable[bool]]

SESSION_COOKIE = "pgqueue_dashboard"
CSRF_COOKIE = "pgqueue_csrf"

#: no inline script or style, nothing from elsewhere, no framing, forms post only here
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


R = TypeVar("R", bound=Response)


def security_headers(response: R, *, no_store: bool = True) -> R:
    """Add the Content-Security-Policy and its companions to ``response``."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response


class Guard:
    """Authentication and CSRF for one dashboard.

    ``auth``: an access token (a string: the browser signs in once, a cookie remembers it; API
    clients send ``Authorization: Bearer <token>``), a callable deciding per request, or None
    (no authentication, explicitly)."""

    def __init__(self, auth: str | AuthCallable | None) -> None:
        self._secret = secrets.token_bytes(32)
        self.token = auth if isinstance(auth, str) else None
        self.callable = None if isinstance(auth, str) else auth
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the dashboard's access token must be at least 16 characters")

    @property
    def uses_token(self) -> bool:
        return self.token is not None

    def _mac(self, what: str, value: str) -> str:
        return hmac.new(self._secret, f"{what}:{value}".encode(), hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """The cookie value that proves the token was given (not the token itself)."""
        assert self.token is not None
        return hashlib.sha256(b"pgqueue-dashboard:" + self.token.encode()).hexdigest()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(),
                                                              self.token.encode())

    async def allowed(self, request: Request) -> bool:
        """Whether the request is authenticated."""
        if self.callable is not None:
            verdict: Any = self.callable(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return bool(verdict)
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and self.token_matches(header[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie, self.session_value())

    def csrf_for(self, cookie: str) -> str:
        """The CSRF field value that goes with this browser's CSRF cookie."""
        return self._mac("csrf", cookie)

    def csrf_ok(self, request: Request, field: str | None) -> bool:
        """Whether a POST carries the CSRF field that matches its cookie, and (when the browser
        says where it comes from) comes from this origin."""
        origin = request.headers.get("origin")
        if origin and origin != "null":
            expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin != expected:
                return False
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and bool(field) and hmac.compare_digest(
            str(field), self.csrf_for(cookie))


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)
