"""pgqueue for Django: a ``django.tasks`` backend and ``manage.py`` commands.

Works with Django 6's built-in ``django.tasks`` (Python >= 3.12) and with Django 5.2 plus the
``django-tasks`` backport (``pip install "pgqueue-tx[django]"`` installs the backport where it is
needed). Settings::

    INSTALLED_APPS = [..., "pgqueue.contrib.django"]
    TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend", "OPTIONS": {}}}

then ``python manage.py pgqueue_migrate`` (pgqueue's tables) and
``python manage.py pgqueue_worker`` (runs the tasks). See :class:`PgQueueBackend`.
"""

from pgqueue.contrib.django.backend import OPTIONS, PgQueueBackend

__all__ = ["OPTIONS", "PgQueueBackend"]
