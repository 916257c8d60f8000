"""Settings of the example shop: Django on PostgreSQL (psycopg 3), tasks in pgqueue.

The database comes from ``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/shop``).
"""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("DATABASE_URL",
                                      "postgresql://postgres@127.0.0.1:5432/shop"))

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "shopsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pgqueue.contrib.django",      # manage.py pgqueue_migrate / pgqueue_worker
    "shop",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "shop"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.PgQueueBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"SCHEMA": "pgqueue", "WORKER": {"concurrency": 2}},
    }
}
