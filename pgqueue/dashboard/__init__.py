"""pgqueue's web dashboard: queues, jobs, failures, history, workers, schedules and limits,
with safe actions (``pip install 'pgqueue-tx[dashboard]'``; PostgreSQL driver only).

Run it with ``pgqueue dashboard`` (127.0.0.1:8765, an access token unless ``--no-auth``), or
mount it in your own Starlette or FastAPI application, where your ``auth`` callable decides who
may see it::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    import pgqueue.dashboard

    def staff_only(request) -> bool:
        return request.headers.get("x-user-role") == "staff"

    web = Starlette(routes=[Mount("/jobs", pgqueue.dashboard.asgi_app(app, auth=staff_only))])

Server-rendered HTML (Jinja2 with autoescape everywhere, a strict Content-Security-Policy, no
inline script); every action is a POST with a CSRF token, and ``read_only=True`` removes them.
"""

from __future__ import annotations

import secrets

import uvicorn
from starlette.applications import Starlette

from pgqueue.app import App
from pgqueue.dashboard._data import COUNT_CAP, postgres_driver
from pgqueue.dashboard._security import AuthCallable
from pgqueue.dashboard._web import Dashboard

__all__ = ["COUNT_CAP", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "AuthCallable", "asgi_app",
           "new_token", "postgres_check", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: the environment variable ``pgqueue dashboard`` takes its access token from
TOKEN_ENV = "PGQUEUE_DASHBOARD_TOKEN"


def asgi_app(app: App, *, auth: str | AuthCallable | None, read_only: bool = False,
             refresh_s: float = 5.0, stale_after_s: float = 60.0,
             count_cap: int = COUNT_CAP) -> Starlette:
    """The dashboard of ``app`` as an ASGI application (mountable at any prefix).

    Args:
        app: a :class:`pgqueue.App` on the PostgreSQL driver (anything else:
            :class:`pgqueue.CapabilityError`).
        auth: required, so that no dashboard is open by accident: a callable taking the
            Starlette ``Request`` and returning (or awaiting) True to let it in -- your
            application's own login; or an access token string (at least 16 characters: the
            browser signs in once with it, ``?token=`` or the sign-in form, and a cookie
            remembers it; API clients send ``Authorization: Bearer``); or None for no
            authentication at all.
        read_only: hide every action and refuse action requests (403). Default False.
        refresh_s: seconds between the overview's live refreshes (default 5).
        stale_after_s: a worker whose last heartbeat is older is flagged stale (default 60).
        count_cap: the overview counts each figure up to this many rows (default
            :data:`COUNT_CAP`, 10,000) and shows a bigger one as "10,000+", so that it
            renders in the same time at any table size; the chart counts up to a quarter of
            it per minute. The exact figures are in the ``queue_stats`` view (``pgqueue
            status``), which counts every row.
    """
    return Dashboard(app, auth=auth, read_only=read_only, refresh_s=refresh_s,
                     stale_after_s=stale_after_s, count_cap=count_cap).asgi()


def postgres_check(app: App) -> None:
    """Raise :class:`pgqueue.CapabilityError` unless ``app`` uses the PostgreSQL driver (the
    dashboard reads pgqueue's tables)."""
    postgres_driver(app)


def new_token() -> str:
    """A fresh random access token (URL-safe)."""
    return secrets.token_urlsafe(24)


def serve(app: App, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          auth: str | AuthCallable | None, read_only: bool = False,
          count_cap: int = COUNT_CAP) -> None:
    """Serve the dashboard with uvicorn until interrupted (what ``pgqueue dashboard`` runs);
    the options are :func:`asgi_app`'s."""
    uvicorn.run(asgi_app(app, auth=auth, read_only=read_only, count_cap=count_cap),
                host=host, port=port,
                log_level="warning", access_log=False, server_header=False)
