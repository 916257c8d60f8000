"""A real PgBouncer in front of the test server, for the tests of ``pooler="transaction"``.

:class:`PgBouncer` starts Debian's ``pgbouncer`` (``apt-get install pgbouncer``) with an ini of
its own in a temporary directory: 127.0.0.1 on a free port, ``pool_mode = transaction``,
``default_pool_size = 4`` (so that clients really share server sessions) lent round-robin
(``server_round_robin``: successive clients see every server session), trust auth through an
auth file (which also holds the password pgbouncer logs in to the server with, when the server
asks for one: the embedded server does), and a wildcard database entry that forwards every
database name to the test server.
As root it runs as ``nobody`` (PgBouncer refuses to run as root), its directory handed over.
:func:`pgbouncer_binary` says why tests must skip when the binary is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue._embedded.processes import death_signal_setup, free_port
from tests.helpers import wait_for

__all__ = ["PgBouncer", "pgbouncer_binary"]

_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> tuple[str | None, str]:
    """(the pgbouncer binary, "") or (None, why there is none)."""
    found = shutil.which("pgbouncer") or next((p for p in _PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        return None, "pgbouncer is not installed (apt-get install -y pgbouncer)"
    return found, ""


class PgBouncer:
    """One pgbouncer process in front of the server of ``server_dsn``."""

    def __init__(self, server_dsn: str, *, pool_mode: str = "transaction",
                 pool_size: int = 4) -> None:
        binary, why = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(why)
        self.binary = binary
        params = conninfo_to_dict(server_dsn)
        self.server_host = str(params.get("host") or "127.0.0.1")
        self.server_port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or pwd.getpwuid(os.geteuid()).pw_name)
        #: the server's password, if it asks for one (the embedded server does): pgbouncer
        #: logs in with it (from its auth file); its own clients are trusted
        self.password = params.get("password")
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def url(self, dsn: str) -> str:
        """``dsn`` (a database of the test server) reached through this pgbouncer."""
        params = conninfo_to_dict(dsn)
        params.update(host="127.0.0.1", port=str(self.port))
        params.pop("hostaddr", None)
        return make_conninfo(**params)  # type: ignore[arg-type]

    def start(self) -> PgBouncer:
        self.port = free_port()
        # the password pgbouncer logs in to the server with (its clients are trusted)
        secret = str(self.password or "").replace('"', '""')
        (self.dir / "users.txt").write_text(f'"{self.user}" "{secret}"\n')
        (self.dir / "users.txt").chmod(0o600)
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={self.server_host} port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "users.txt"}
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
server_round_robin = 1
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
logfile = {self.dir / "pgbouncer.log"}
log_connections = 0
log_disconnections = 0
""")
        cmd = [self.binary]
        if os.geteuid() == 0:  # pgbouncer refuses root: run as nobody, which owns the dir
            nobody = pwd.getpwnam("nobody")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            cmd += ["-u", "nobody"]
        cmd.append(str(self.dir / "pgbouncer.ini"))
        # its output to a file, never a pipe nobody reads: a full pipe would block pgbouncer
        self._out = open(self.dir / "pgbouncer.out", "wb")  # noqa: SIM115 (closed in stop)
        # dies with this process even if the fixture's teardown never runs
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     preexec_fn=death_signal_setup(os.getpid()))
        probe = make_conninfo(host="127.0.0.1", port=str(self.port), user=self.user,
                              dbname="postgres", connect_timeout="2")
        wait_for(lambda: self._answers(probe), 30, "pgbouncer to accept connections")
        return self

    def _answers(self, probe: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            out = (self.dir / "pgbouncer.out").read_text(errors="replace")
            raise RuntimeError(f"pgbouncer exited ({self.proc.returncode}): {out}")
        try:
            psycopg.connect(probe, prepare_threshold=None).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
