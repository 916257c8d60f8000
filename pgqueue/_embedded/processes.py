"""Process-level helpers of the embedded server: ports, signals, lock files, leftovers."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "TEMP_DATA_PREFIX",
    "child_env",
    "death_signal_setup",
    "free_port",
    "is_postgres",
    "lockfile_lines",
    "pid_alive",
    "read_postmaster_pid",
    "sweep_stale_temp_dirs",
]

#: name prefix of temporary data directories (``<tmp>/pgqueue-pg-<pid>-*``)
TEMP_DATA_PREFIX = "pgqueue-pg-"
#: a temporary data directory younger than this (seconds) is never swept
STALE_AFTER_S = 60.0
_PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (possibly owned by someone else)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_postgres(pid: int) -> bool | None:
    """Whether ``pid`` runs a ``postgres`` binary; ``None`` when that cannot be told."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return comm.startswith("postgres")


def lockfile_lines(datadir: Path) -> list[str]:
    """The lines of ``postmaster.pid`` (pid, data dir, start time, port, socket dir, listen
    address, shared memory key, status), or ``[]``."""
    try:
        return (datadir / "postmaster.pid").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def read_postmaster_pid(datadir: Path) -> tuple[int, str] | None:
    """``(pid, port)`` from ``postmaster.pid``, or ``None`` if there is no readable one."""
    lines = lockfile_lines(datadir)
    try:
        return int(lines[0]), (lines[3].strip() if len(lines) > 3 else "?")
    except (ValueError, IndexError):
        return None


def sweep_stale_temp_dirs(owner_uids: set[int]) -> None:
    """Remove temporary data directories whose creating process is gone.

    ``PR_SET_PDEATHSIG`` stops the server of a killed process, but its data directory stays.
    A directory is removed only if it is owned by one of ``owner_uids``, is older than a minute,
    its creator's pid (part of the name) is dead, and no live postmaster holds it.
    """
    pattern = re.compile(re.escape(TEMP_DATA_PREFIX) + r"(\d+)-")
    for entry in Path(tempfile.gettempdir()).glob(f"{TEMP_DATA_PREFIX}*"):
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            st = entry.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owner_uids:
                continue
            if time.time() - st.st_mtime < STALE_AFTER_S or pid_alive(int(match.group(1))):
                continue
            held = read_postmaster_pid(entry)
            if held is not None and pid_alive(held[0]):
                continue
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def death_signal_setup(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGINT the child (fast shutdown) when we die.

    CPython changes uid/gid *before* calling ``preexec_fn``, so the setting survives the switch
    to the unprivileged user. The signal fires when the *thread* that started the server exits:
    start the server from the main thread. Outside Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no dlopen in the child

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
        if os.getppid() != parent_pid:  # we died between fork and prctl
            os._exit(1)

    return setup


def child_env() -> dict[str, str]:
    """Our environment without ``PG*`` variables, which would steer initdb and postgres."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
