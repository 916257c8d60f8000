"""A primary and a streaming replica started by a test, for failover tests.

:class:`ReplicatedPair` runs two PostgreSQL servers from the system's binaries (Debian's
``/usr/lib/postgresql/<major>/bin``, or ``$PGQUEUE_PG_BINDIR``): ``initdb`` makes the primary,
``pg_basebackup -R`` the replica, each in a temporary directory, listening on a free port of
127.0.0.1 only (trust authentication: nobody else on 127.0.0.1 runs tests here; no unix
socket). Once the replica streams, the primary is switched to ``synchronous_standby_names =
'*'`` (``ALTER SYSTEM`` after the base backup, so the replica does not inherit it: a promoted
replica must not wait for a standby of its own), so every commit it acknowledges is on the
replica too.

Both servers are our direct children with the parent-death signal (a killed test leaves no
server behind). As root they run as the ``postgres`` user (or ``$PGQUEUE_EMBEDDED_USER``):
initdb and postgres refuse root.

- :meth:`ReplicatedPair.promote` promotes the replica (``pg_promote()``, waiting for the end
  of recovery);
- :meth:`ReplicatedPair.stop_primary` stops the primary in immediate mode (SIGQUIT: no
  checkpoint, sessions cut, as in a crash);
- :meth:`ReplicatedPair.url` is the multi-host URL clients use
  (``target_session_attrs=read-write``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from pgqueue._embedded.processes import child_env, death_signal_setup, free_port

__all__ = ["ReplicatedPair", "replication_bindir"]

_TOOLS = ("initdb", "postgres", "pg_basebackup")
_SERVER_USER = "postgres"


def replication_bindir() -> Path | None:
    """A PostgreSQL ``bin/`` with initdb, postgres and pg_basebackup, or None."""
    env = os.environ.get("PGQUEUE_PG_BINDIR", "").strip()
    candidates = [Path(env)] if env else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in _TOOLS):
            return bindir
    return None


class _Server:
    """One postgres process of the pair."""

    def __init__(self, pair: ReplicatedPair, name: str) -> None:
        self.pair = pair
        self.datadir = pair.root / name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, *settings: str, timeout: float = 60.0) -> None:
        args = [str(self.pair.bindir / "postgres"), "-D", str(self.datadir),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", "unix_socket_directories=", "-c", "max_connections=120",
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_wal_senders=4", "-c", "wal_level=replica"]
        for s in settings:
            args += ["-c", s]
        log = open(self.datadir.parent / f"{self.datadir.name}.log", "ab")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
                env=child_env(), start_new_session=True,
                preexec_fn=death_signal_setup(os.getpid()), user=self.pair.uid,
                group=self.pair.gid, extra_groups=self.pair.extra_groups)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if "starting up" not in str(exc) and (self.proc.poll() is not None
                                                      or time.monotonic() > deadline):
                    raise RuntimeError(f"{self.datadir.name} did not start: {exc}\n"
                                       f"{self.log_tail()}") from exc
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.datadir.parent / f"{self.datadir.name}.log").read_text()[-chars:]
        return ""


class ReplicatedPair:
    """A primary with one synchronous streaming replica (see the module docstring)."""

    def __init__(self, bindir: Path, database: str = "test") -> None:
        self.bindir = bindir
        self.database = database
        #: the server's user and group when we are root (None: run as ourselves)
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(os.environ.get("PGQUEUE_EMBEDDED_USER") or _SERVER_USER)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.root = Path(tempfile.mkdtemp(prefix="pgqueue-failover-"))
        if self.uid is not None and self.gid is not None:
            os.chown(self.root, self.uid, self.gid)
        self.primary = _Server(self, "primary")
        self.replica = _Server(self, "replica")

    @property
    def extra_groups(self) -> list[int] | None:
        """No supplementary groups for the server's user (None: keep ours)."""
        return [] if self.uid is not None else None

    def _tool(self, name: str, *args: str, timeout: float = 120.0) -> None:
        result = subprocess.run([str(self.bindir / name), *args], capture_output=True,
                                text=True, cwd="/", env=child_env(), timeout=timeout,
                                stdin=subprocess.DEVNULL, user=self.uid, group=self.gid,
                                extra_groups=self.extra_groups)
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-3000:]}")

    def start(self) -> None:
        """initdb, start the primary, create the database, base-backup and start the replica
        and wait until it streams synchronously."""
        self._tool("initdb", "-D", str(self.primary.datadir), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        self.primary.start()
        with psycopg.connect(self.primary.dsn(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.database}"')
        self._tool("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                   "-U", "postgres", "-D", str(self.replica.datadir), "-R", "-X", "stream",
                   "-c", "fast", "--no-sync")
        self.replica.start("hot_standby=on")
        deadline = time.monotonic() + 60
        with psycopg.connect(self.primary.dsn(), autocommit=True) as c:
            c.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            c.execute("SELECT pg_reload_conf()")
            while c.execute("SELECT count(*) FROM pg_stat_replication "
                            "WHERE sync_state = 'sync' AND state = 'streaming'"
                            ).fetchone() != (1,):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not stream synchronously within 60 s:\n"
                                       + self.replica.log_tail())
                time.sleep(0.05)

    def url(self, database: str | None = None) -> str:
        """The multi-host URL of the pair: whichever of the two accepts writes."""
        db = database or self.database
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},"
                f"127.0.0.1:{self.replica.port}/{db}?target_session_attrs=read-write"
                "&connect_timeout=5")

    def promote(self) -> None:
        """Promote the replica and wait until it accepts writes."""
        with psycopg.connect(self.replica.dsn(), autocommit=True) as c:
            c.execute("SELECT pg_promote(wait => true, wait_seconds => 60)")

    def stop_primary(self) -> None:
        """Stop the primary in immediate mode (no checkpoint; sessions cut as in a crash)."""
        self.primary.stop(signal.SIGQUIT)

    def stop(self) -> None:
        """Stop both servers and remove their directories."""
        self.primary.stop(signal.SIGQUIT)
        self.replica.stop(signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)
