"""Framework integrations, built on pgqueue's public API only.

- :mod:`pgqueue.contrib.django`: a ``django.tasks`` backend (Django 6, or Django 5.2 with the
  ``django-tasks`` backport), the ``pgqueue_worker`` and ``pgqueue_migrate`` commands.

FastAPI and Flask need no adapter: pass the request's SQLAlchemy session as ``conn=`` (see
``examples/fastapi/`` and ``examples/flask/``).
"""
