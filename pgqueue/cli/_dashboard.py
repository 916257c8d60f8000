"""``pgqueue dashboard``: serve the web dashboard (:mod:`pgqueue.dashboard`) with uvicorn.

The dashboard's packages (Starlette, Jinja2, uvicorn) are an extra: the module is imported
when the command runs, so that the rest of the CLI works without them."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType

from pgqueue.cli import _context
from pgqueue.errors import ConfigurationError, ValidationError
from pgqueue.worker._metrics import check_port

__all__ = ["add_parser", "cmd_dashboard"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(command: Callable[[str, str, str], argparse.ArgumentParser],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``dashboard`` to the subcommands."""
    sp = command("dashboard", "serve the web dashboard (queues, jobs, failures, workers)", """\
Serve the web dashboard: queues, jobs, the failed archive, history, workers, schedules and
limits, with actions (retry, purge, pause, resume, cancel, run a schedule now).

It binds 127.0.0.1 and asks for an access token: PGQUEUE_DASHBOARD_TOKEN, else a new one
printed once at start (open the printed URL). --no-auth turns the token off (only where
nothing else can reach the port); --read-only removes every action. Needs
pip install 'pgqueue-tx[dashboard]' and the postgres driver.""")
    common(sp)
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sp.add_argument("--read-only", action="store_true",
                    help="show everything, allow no action")
    sp.add_argument("--no-auth", action="store_true",
                    help="no access token (anyone who reaches the port may use it)")
    sp.add_argument("--count-cap", type=int, default=None, metavar="N",
                    help="the overview counts each figure up to N rows and shows more as "
                         "'N+' (default 10,000; pgqueue status counts every row)")
    sp.set_defaults(func=cmd_dashboard)


def _dashboard_module() -> ModuleType:
    try:
        return importlib.import_module("pgqueue.dashboard")
    except ImportError as exc:
        raise ConfigurationError(f"the dashboard needs its packages ({exc.name} is missing): "
                                 "pip install 'pgqueue-tx[dashboard]'") from exc


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    port = check_port(args.port, flag="--port")
    dashboard = _dashboard_module()
    count_cap = dashboard.COUNT_CAP if args.count_cap is None else args.count_cap
    if count_cap < 1:
        raise ValidationError(f"--count-cap must be at least 1 row, not {count_cap}")
    token: str | None = None
    if not args.no_auth:
        token = os.environ.get(dashboard.TOKEN_ENV) or None
        if token is not None and len(token) < 16:
            raise ValidationError(f"{dashboard.TOKEN_ENV} must be at least 16 characters")
    with _context.opened_app(args) as app:
        app.driver.check()
        dashboard.postgres_check(app)
        shown_host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{shown_host}:{port}/"
        if args.no_auth:
            print(f"pgqueue dashboard on {url} (no authentication)", flush=True)
            if args.host not in _LOOPBACK:
                print(f"warning: --no-auth on {args.host}: anyone who reaches this port can "
                      "act on your jobs", file=sys.stderr, flush=True)
        elif token is None:
            token = dashboard.new_token()
            print(f"pgqueue dashboard on {url}?token={token}\n(a new access token; set "
                  f"{dashboard.TOKEN_ENV} to choose your own)", flush=True)
        else:
            print(f"pgqueue dashboard on {url} (access token from {dashboard.TOKEN_ENV})",
                  flush=True)
        dashboard.serve(app, host=args.host, port=port, auth=token, read_only=args.read_only,
                        count_cap=count_cap)
    return 0
