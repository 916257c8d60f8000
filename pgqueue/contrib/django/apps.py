"""The Django app of pgqueue's integration: add ``"pgqueue.contrib.django"`` to
``INSTALLED_APPS`` for the ``pgqueue_worker`` and ``pgqueue_migrate`` commands."""

from __future__ import annotations

from django.apps import AppConfig


class PgQueueConfig(AppConfig):
    """``INSTALLED_APPS = [..., "pgqueue.contrib.django"]``."""

    name = "pgqueue.contrib.django"
    label = "pgqueue_django"
    verbose_name = "pgqueue"
