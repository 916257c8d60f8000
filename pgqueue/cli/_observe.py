"""Observability commands: ``pgqueue metrics`` (the standalone exporter), the worker's
``--metrics-port``/``--metrics-host``/``--queue-metrics``/``--log-format`` flags, and
``pgqueue status --check``.

The exporter serves the queue-level gauges of :class:`pgqueue.worker._metrics.QueueMetrics`
(one query per scrape, cached) with ``/livez`` and ``/readyz``; run one per cluster, not one
per worker. See docs/observability.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pgqueue.app import App
from pgqueue.cli import _context
from pgqueue.cli._jobs import cmd_status
from pgqueue.errors import CapabilityError, DatabaseUnavailableError, PgQueueError, ValidationError
from pgqueue.worker._metrics import (
    DEFAULT_METRICS_HOST,
    HttpEndpoint,
    QueueMetrics,
    check_port,
    require_prometheus,
)

__all__ = ["add_parser", "add_worker_flags", "check_queues", "cmd_metrics", "cmd_status_check",
           "worker_options"]

#: the exporter's default port (the worker has none: --metrics-port turns its endpoint on)
DEFAULT_EXPORTER_PORT = 9465


def add_worker_flags(sp: argparse.ArgumentParser) -> None:
    """The worker's observability flags."""
    sp.add_argument("--metrics-port", type=int,
                    help="serve Prometheus /metrics, /livez and /readyz on this port "
                         "(needs pgqueue-tx[metrics])")
    sp.add_argument("--metrics-host", default=DEFAULT_METRICS_HOST,
                    help=f"address the metrics port binds (default {DEFAULT_METRICS_HOST}; "
                         "0.0.0.0 opens it to the network)")
    sp.add_argument("--queue-metrics", action="store_true",
                    help="also serve the queue gauges (one query per scrape; better: run "
                         "`pgqueue metrics` once for the cluster)")


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Worker keyword arguments of the flags of :func:`add_worker_flags`."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        if getattr(args, "queue_metrics", False):
            raise ValidationError("--queue-metrics needs --metrics-port")
        return {}
    return {"metrics_port": check_port(port), "metrics_host": args.metrics_host,
            "queue_metrics": args.queue_metrics}


def add_parser(command: Any, common: Any) -> None:
    """Add ``metrics`` to the subcommands (``command(name, summary, description)`` makes the
    parser; ``common`` adds --database-url and --schema)."""
    sp = command("metrics", "serve the queue gauges for Prometheus (one exporter per cluster)",
                 "Serve /metrics (queue gauges from one query per scrape, cached --ttl "
                 "seconds), /livez and /readyz.")
    common(sp)
    sp.add_argument("--port", type=int, default=DEFAULT_EXPORTER_PORT,
                    help=f"port to listen on (default {DEFAULT_EXPORTER_PORT})")
    sp.add_argument("--host", default=DEFAULT_METRICS_HOST,
                    help=f"address to bind (default {DEFAULT_METRICS_HOST})")
    sp.add_argument("--ttl", type=float, default=5.0,
                    help="seconds a query's result serves scrapes (default 5)")
    sp.set_defaults(func=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    """Run the exporter until interrupted."""
    port = check_port(args.port, flag="--port")
    if not args.ttl > 0:
        raise ValidationError(f"--ttl must be a positive number of seconds, not {args.ttl!r}")
    prom = require_prometheus()
    with _context.opened_app(args) as app:
        app.driver.check()
        registry = prom.CollectorRegistry(auto_describe=True)
        queues = QueueMetrics(app.stats, ttl=args.ttl)
        registry.register(queues)

        def ready() -> tuple[bool, dict[str, Any]]:
            try:
                app.driver.check()
            except PgQueueError as exc:
                return False, {"database": "unreachable", "error": str(exc)}
            return True, {"database": "ok"}

        endpoint = HttpEndpoint(registry, host=args.host, port=port, ready=ready)
        endpoint.start()
        print(f"serving queue metrics on http://{args.host}:{endpoint.port}/metrics",
              flush=True)
        endpoint.wait()
    return 0


def add_status_flags(sp: argparse.ArgumentParser) -> None:
    """``pgqueue status --check [--max-age S]``."""
    sp.add_argument("--check", action="store_true",
                    help="exit 1 when a queue's oldest waiting job is older than --max-age or "
                         "no live worker serves a queue with jobs (for cron monitoring)")
    sp.add_argument("--max-age", type=float, default=300.0,
                    help="with --check: the oldest wait allowed, in seconds (default 300)")


def cmd_status_check(args: argparse.Namespace) -> int:
    """``pgqueue status``, or with ``--check`` the health verdict (see :func:`check_queues`)."""
    if not getattr(args, "check", False):
        return cmd_status(args)
    if not args.max_age > 0:
        raise ValidationError(f"--max-age must be a positive number of seconds, not "
                              f"{args.max_age!r}")
    with _context.opened_app(args) as app:
        try:
            problems = check_queues(app, max_age=args.max_age)
        except DatabaseUnavailableError as exc:
            problems = [f"database unreachable: {exc}"]
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems}))
    else:
        print("\n".join(problems) if problems else "ok: every queue is served and none waits "
              f"longer than {args.max_age:g} s")
    return 1 if problems else 0


def check_queues(app: App, *, max_age: float, worker_lease_s: float = 30.0) -> list[str]:
    """What is wrong with the queues, one line each (empty: all is well): a queue whose oldest
    ready job waited longer than ``max_age`` seconds, or a queue with ready or running jobs that
    no live worker serves (no heartbeat in the last ``max(60, 2 * worker_lease_s)`` seconds).
    Paused queues are skipped."""
    problems = []
    live = getattr(app.driver, "live_worker_queues", None)
    if live is None:
        raise CapabilityError(f"status --check needs the postgres driver, not {app.driver.name}")
    served = live(max_age_s=max(60.0, 2 * worker_lease_s))
    for s in app.stats():
        if s.paused:
            continue
        if s.oldest_wait_s is not None and s.oldest_wait_s > max_age:
            problems.append(f"queue {s.queue}: oldest waiting job is {s.oldest_wait_s:.0f} s "
                            f"old (more than {max_age:g} s)")
        if (s.waiting or s.running) and s.queue not in served:
            problems.append(f"queue {s.queue}: {s.waiting} waiting, {s.running} running, and "
                            "no live worker serves it")
    return problems
