"""Settings: one validated, frozen object built from defaults, a YAML file, a ``.env`` file, the
environment and explicit arguments -- never writing ``os.environ``.

::

    settings = pgqueue.load_settings(yaml_file="app-config.yaml", env_file=".env")
    app = pgqueue.App.from_settings(settings)              # postgres, memory or redis
    app.worker(**settings.worker_options()).run_forever()

This package is generic: it knows pgqueue's own names (below) and is handed any other
spelling as a :class:`Vocabulary`. :func:`pgqueue.load_settings` (and
:func:`pgqueue.compat.load_settings`) is :func:`load_settings` with the vocabularies of the
three products pgqueue replaces (Vela's ``QUEUE_*``/``VELA_QUEUE_*`` variables, Velocity's
``.env`` and Backstage's ``backend.queue`` YAML shape): see :mod:`pgqueue.compat._vocabulary`.

**One resolution.** :func:`find_settings` is what ``pgqueue.App()`` (for whatever it is not
given) and every ``pgqueue`` command use: ``app-config.yaml`` and ``.env`` of the current
directory when they exist, then the environment, read in pgqueue's names and those of every
registered vocabulary (:func:`register_vocabulary`). :mod:`pgqueue.compat` registers the seeds'
vocabularies when imported, and ``import pgqueue`` imports it first, so an application
configured the Vela way (``QUEUE_CONFIG``), the Velocity way (``.env`` with ``QUEUE_TABLE``) or
the Backstage way (``backend.queue`` in ``app-config.yaml``) gets the same database and schema
from ``pgqueue.App()``, ``pgqueue worker`` and ``pgqueue migrate``. (Registration, rather than an
import, keeps the layers: ``config`` sits below ``app``, and ``compat`` above it.)

Layers, later wins:

1. **defaults** -- see :class:`Settings`;
2. **YAML** (``yaml_file``; needs PyYAML: ``pip install 'pgqueue-tx[yaml]'``), read by the YAML
   readers of the vocabularies;
3. **.env** (``env_file``): ``KEY=VALUE`` lines with the same keys as the environment; ``#``
   comments (whole-line, or after whitespace in an unquoted value), ``export KEY=...``, single
   quotes (literal) and double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes). No variable
   expansion. Read by pgqueue itself; nothing is put into ``os.environ``.
4. **environment** (``environ``, default ``os.environ``, only read). pgqueue's own variables:

   =========================  =======================================================
   variable                   setting
   =========================  =======================================================
   ``PGQUEUE_QUEUE_DRIVER``   ``driver``: postgres (aliases postgresql, database, pg),
                              memory, redis, sqs
   ``PGQUEUE_QUEUE_CONFIG``   the connection string of the selected driver (database
                              URL for postgres, Redis URL for redis)
   ``PGQUEUE_DATABASE_URL``,  ``database_url`` (postgres only; ``PGQUEUE_DATABASE_URL``
   ``DATABASE_URL``           wins over every other name, ``DATABASE_URL`` loses to all)
   ``PGQUEUE_QUEUE_CLUSTER``  ``cluster``: ``host1:5432,host2:5432`` (or ``true``: the
                              hosts of the URL)
   ``PGQUEUE_QUEUE_ROUTES``   ``routes``: comma list of the queues a worker consumes
   ``PGQUEUE_POOLER``         ``pooler``: ``transaction`` (PgBouncer's transaction mode,
                              cloud poolers), ``session`` or ``none`` (docs/deploy.md)
   ``PGQUEUE_LISTEN_URL``     ``listen_url``: a direct PostgreSQL URL for the workers'
                              LISTEN connection behind a transaction pooler
   ``PGQUEUE_REDIS_URL``      ``redis_url``
   ``PGQUEUE_REDIS_TIMEOUT``  ``redis_timeout`` (seconds a command may take; default 5)
   ``PGQUEUE_SQS_REGION``     ``sqs_region`` (the sqs driver's AWS region)
   ``PGQUEUE_SQS_ENDPOINT``   ``sqs_endpoint`` (another SQS endpoint: LocalStack, moto)
   ``PGQUEUE_SCHEMA``         ``schema``
   ``PGQUEUE_CONCURRENCY``    ``concurrency``
   ``PGQUEUE_POLL_INTERVAL``  ``poll_interval`` (seconds; ``500ms`` also ok)
   ``PGQUEUE_EVENT_LOOP``     ``event_loop``: the worker's event loop: ``asyncio``
                              (default), ``uvloop`` or ``auto`` (uvloop when installed)
   ``PGQUEUE_MAX_ATTEMPTS``   ``max_attempts``
   =========================  =======================================================

   Within one layer the most specific name wins (each vocabulary ranks its names), and an
   empty value counts as not set.
5. **overrides**: keyword arguments named like the fields (``None`` = not set).

``cluster`` (postgres): a multi-host connection so that a worker follows a failover. The
hosts (``host``, ``host:port``, ``[v6addr]:port``; port default 5432) replace the host of the
database URL (which still gives user, password and database), and
``target_session_attrs=read-write`` makes libpq pick the primary. ``true`` keeps the hosts of the
URL (``postgresql://u@h1:5432,h2:5432/db``) and only adds ``target_session_attrs``; ``false``
disables it. The redis driver does not support Redis Cluster (an error says so).

Driver default: ``postgres`` when a database URL (or a cluster host list) is configured
anywhere, else ``memory``.

Checks: every value is checked in the source it comes from, even when a later source overrides
it, and any invalid value raises :class:`pgqueue.ConfigurationError` naming the setting, the
source (``env PGQUEUE_QUEUE_DRIVER``, ``app-config.yaml line 4: backend.queue.maxAttempts``,
``.env line 3: PGQUEUE_SCHEMA``, ``argument concurrency``) and what is allowed. Connection
strings are checked for the driver that is finally selected.
"""

from __future__ import annotations

from pgqueue.config._loader import (
    ENV_FILE,
    YAML_FILE,
    find_settings,
    load_settings,
    register_vocabulary,
    registered_vocabularies,
)
from pgqueue.config._settings import FIELDS, Settings
from pgqueue.config._sources import read_env_file
from pgqueue.config._values import kind_of, parse_int, parse_setting
from pgqueue.config._vocabulary import (
    PGQUEUE,
    EnvReader,
    Found,
    Vocabulary,
    YamlDocument,
    YamlReader,
)

__all__ = ["ENV_FILE", "ENV_VARS", "FIELDS", "PGQUEUE", "YAML_FILE", "EnvReader", "Found",
           "Settings", "Vocabulary", "YamlDocument", "YamlReader", "find_settings", "kind_of",
           "load_settings", "parse_int", "parse_setting", "read_env_file",
           "register_vocabulary", "registered_vocabularies"]

#: every variable :func:`load_settings` reads without other vocabularies
ENV_VARS = PGQUEUE.variables
