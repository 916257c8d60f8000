"""``manage.py pgqueue_migrate``: create or upgrade pgqueue's tables (idempotent).

::

    python manage.py migrate && python manage.py pgqueue_migrate
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import pgqueue
from pgqueue.contrib.django._compat import task_backends
from pgqueue.contrib.django.backend import PgQueueBackend


class Command(BaseCommand):
    help = "Create or upgrade pgqueue's schema in the backend's database (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default",
                            help="the TASKS alias (default: default)")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = task_backends[options["backend"]]
        if not isinstance(backend, PgQueueBackend):
            raise CommandError(f"TASKS[{options['backend']!r}] is {type(backend).__name__}, "
                               "not pgqueue.contrib.django.PgQueueBackend")
        try:
            backend.app.migrate()
        except pgqueue.PgQueueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"pgqueue schema {backend.app.schema!r} is up to date")
