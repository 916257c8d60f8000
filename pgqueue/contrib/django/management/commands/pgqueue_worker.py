"""``manage.py pgqueue_worker``: run the Django tasks of a pgqueue backend.

::

    python manage.py pgqueue_worker                     # the backend's QUEUES, until Ctrl-C
    python manage.py pgqueue_worker --queue emails --concurrency 4
    python manage.py pgqueue_worker --burst             # exit once the queues are empty
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import autodiscover_modules

import pgqueue
from pgqueue.contrib.django._compat import task_backends
from pgqueue.contrib.django.backend import PgQueueBackend


class Command(BaseCommand):
    help = ("Run pgqueue workers for Django tasks (imports every installed app's tasks "
            "module first).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default",
                            help="the TASKS alias (default: default)")
        parser.add_argument("--queue", action="append", dest="queues", metavar="QUEUE",
                            help="a queue to consume (repeatable; default: the backend's "
                                 "QUEUES)")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="tasks run at once (default: OPTIONS['WORKER'], else 1)")
        parser.add_argument("--burst", action="store_true",
                            help="exit once no task is ready, running or scheduled")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = task_backends[options["backend"]]
        if not isinstance(backend, PgQueueBackend):
            raise CommandError(f"TASKS[{options['backend']!r}] is {type(backend).__name__}, "
                               "not pgqueue.contrib.django.PgQueueBackend")
        autodiscover_modules("tasks")
        extra: dict[str, Any] = {"burst": True} if options["burst"] else {}
        if options["concurrency"] is not None:
            extra["concurrency"] = options["concurrency"]
        try:
            code = backend.worker(options["queues"], **extra).run_forever()
        except pgqueue.PgQueueError as exc:
            raise CommandError(str(exc)) from exc
        if code:
            raise CommandError(f"the worker exited with status {code}", returncode=code)
