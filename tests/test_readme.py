"""README.md runs as written (issue 10, point 10).

Every fenced block of the README from the Quickstart on is extracted from the file and run, in
order, in one project directory, against a fresh database of the test server:

- a ```python block whose first line is ``# name.py`` is written to that file and run with
  ``python name.py`` (a script) -- by the Quickstart's own shell line when it has one;
  ``# dir/name.py`` is only written (a module that later snippets and the worker import) and
  byte-compiled; a block without such a line runs with ``python -c``;
- a ```bash block of the Quickstart runs line by line with ``bash``, verbatim, except: ``pip
  install`` (the package is installed already), ``docker compose`` (the test server stands in for
  the container) and ``export PGQUEUE_DATABASE_URL=...`` (the test sets that variable to its own
  database; :func:`test_compose_file_and_quickstart_url_agree` checks the URL itself) are
  skipped, and ``pgqueue worker`` gets ``--burst`` so that it stops once its queues are empty;
- a ```sql block runs statement by statement.

A block may be marked on the line before it with an HTML comment the test understands:
``<!-- readme-test: needs-redis -->`` (run only when a Redis answers at 127.0.0.1:6379) or
``<!-- readme-test: skip: why -->``. The Quickstart has no marks: it runs verbatim.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

import pgqueue
from pgqueue.drivers.postgres import schema
from pgqueue.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMPOSE = ROOT / "docker-compose.yml"
MARK_RE = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
FENCE_RE = re.compile(r"^```(\w*)\s*$")
FILE_RE = re.compile(r"#\s*([\w./-]+\.py)\b")
#: marks the README may use, and how many blocks may carry one (as few as possible)
KNOWN_MARKS = ("needs-redis", "skip")
MAX_MARKED = 1


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    section: str
    line: int
    mark: str | None

    @property
    def file(self) -> str | None:
        first = self.code.splitlines()[0] if self.code.strip() else ""
        found = FILE_RE.fullmatch(first.strip())
        return found.group(1) if found else None

    def where(self) -> str:
        return f"README.md line {self.line} ({self.section})"


def read_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, with their section heading and mark."""
    blocks: list[Block] = []
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = FENCE_RE.match(line)
        if fence:
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            prev = lines[start - 1] if start > 0 else ""
            mark = MARK_RE.search(prev)
            blocks.append(Block(fence.group(1), "\n".join(body) + "\n", section, start + 1,
                                mark.group(1) if mark else None))
        i += 1
    return blocks


def runnable_blocks() -> list[Block]:
    """The blocks from the Quickstart on (the install commands above it are not run here)."""
    blocks = read_blocks(README.read_text())
    first = next(n for n, b in enumerate(blocks) if b.section == "Quickstart")
    return blocks[first:]


def redis_answers() -> bool:
    try:
        import redis
    except ImportError:
        return False
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class Project:
    """The reader's project directory and shell, pointed at one test database."""

    def __init__(self, root: Path, url: str, run_by_shell: set[str]) -> None:
        self.root = root
        self.run_by_shell = run_by_shell
        self.url = url
        bindir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "PGQUEUE_DATABASE_URL", "PYTHONPATH")}
        env.update(PGQUEUE_DATABASE_URL=url, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONUNBUFFERED="1")
        self.env = env
        self.output: list[str] = []
        self.placed = 0

    def run(self, argv: list[str], block: Block) -> str:
        started = time.monotonic()
        r = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True,
                           timeout=120)
        print(f"{time.monotonic() - started:6.2f} s  {block.where()}: {' '.join(argv)[-60:]}")
        if r.stderr:
            print(r.stderr)
        if "place_order" in " ".join(argv):
            self.placed += 1
        assert r.returncode == 0, (f"{block.where()}: {argv!r} exited {r.returncode}\n"
                                   f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        assert "Traceback" not in r.stderr, f"{block.where()}: {argv!r}\n{r.stderr}"
        self.output.append(r.stdout)
        return r.stdout

    def python(self, block: Block) -> None:
        path = block.file
        if path is None:
            self.run([sys.executable, "-c", block.code], block)
            return
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code)
        compile(block.code, str(target), "exec")
        if "/" not in path and path not in self.run_by_shell:
            self.run([sys.executable, path], block)   # a script no shell line runs: run it

    def bash(self, block: Block) -> None:
        for raw in block.code.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line.startswith(("pip install",
                                                                     "docker compose")):
                continue
            if line.startswith("export "):
                assert line.startswith("export PGQUEUE_DATABASE_URL="), block.where()
                continue
            if line.startswith("pgqueue worker"):
                command = line.partition("#")[0]
                line = command.rstrip() + " --burst"
            self.run(["bash", "-c", line], block)

    def sql(self, block: Block) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in block.code.split(";\n"):
                text = "\n".join(s for s in statement.splitlines()
                                 if not s.strip().startswith("--")).strip()
                if text:
                    try:
                        conn.execute(text.rstrip(";")).fetchall()
                    except psycopg.Error as exc:
                        raise AssertionError(f"{block.where()}: {exc}\n{text}") from exc


def test_every_snippet_of_the_readme_runs(make_database: Any, tmp_path: Path) -> None:
    url = make_database()   # empty: the Quickstart's own `pgqueue migrate` creates the schema
    blocks = runnable_blocks()
    by_shell = {name for b in blocks if b.lang == "bash" and b.section == "Quickstart"
                for name in re.findall(r"\bpython ([\w.-]+\.py)\b", b.code)}
    assert by_shell == {"create_tables.py", "place_order.py"}
    project = Project(tmp_path, url, by_shell)
    ran = 0
    for block in blocks:
        if block.mark is not None:
            if block.mark == "needs-redis" and not redis_answers():
                continue
            if block.mark.startswith("skip"):
                continue
        if block.lang == "python":
            project.python(block)
        elif block.lang == "bash" and block.section == "Quickstart":
            project.bash(block)
        elif block.lang == "sql":
            project.sql(block)
        else:
            continue
        ran += 1
    assert ran >= 12

    assert project.placed == 1   # the Quickstart places exactly one order
    out = "".join(project.output)
    assert "order 1 placed; its confirmation is queued" in out
    assert "order 1: confirmation sent to alice@example.com" in out   # the worker ran it
    assert "welcome, a@b.c" in out
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT shipped FROM orders WHERE id = 1").fetchone() == (True,)
        done: dict[str, Any] = dict(conn.execute(
            "SELECT task, result FROM pgqueue.job_history WHERE state = 'succeeded' "
            "AND task IN ('ship', 'settle_payment', 'emails.welcome')").fetchall())
        assert done == {"ship": None, "emails.welcome": None,
                        "settle_payment": "order 1 settled after 2 snoozes"}
        first = conn.execute(
            "SELECT state FROM pgqueue.job_history WHERE task = 'send_confirmation' "
            "AND args = '{\"order_id\": 1, \"to\": \"alice@example.com\"}'").fetchall()
        assert first == [("succeeded",)]
        assert conn.execute("SELECT count(*) FROM pgqueue.failed_jobs").fetchone() == (0,)


def test_only_few_blocks_are_marked_and_none_in_the_quickstart() -> None:
    blocks = runnable_blocks()
    marked = [b for b in blocks if b.mark is not None]
    for b in marked:
        assert b.mark.split(":")[0].strip() in KNOWN_MARKS, b.where()  # type: ignore[union-attr]
        assert b.section != "Quickstart", f"{b.where()}: the Quickstart must run verbatim"
    assert len(marked) <= MAX_MARKED
    langs = {b.lang for b in blocks if b.lang}
    assert langs <= {"python", "bash", "sql"}, langs
    # every Python block of the whole README is in the part that is run
    everything = [b for b in read_blocks(README.read_text()) if b.lang == "python"]
    assert len(everything) == len([b for b in blocks if b.lang == "python"])


def quickstart_url() -> str:
    [block] = [b for b in runnable_blocks()
               if b.section == "Quickstart" and b.lang == "bash" and "export " in b.code]
    [line] = [x for x in block.code.splitlines() if x.startswith("export ")]
    return line.split("=", 1)[1].split()[0]


def test_compose_file_and_quickstart_url_agree() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["postgres"]
    env = service["environment"]
    [published] = service["ports"]
    parts = re.fullmatch(r"127\.0\.0\.1:\$\{PGQUEUE_PG_PORT:-(\d+)\}:5432", published)
    assert parts is not None, f"expected 127.0.0.1:${{PGQUEUE_PG_PORT:-N}}:5432, not {published}"
    port = int(parts.group(1))
    assert port != 5432, "the compose file must not publish 5432 (a local server uses it)"

    url = urlsplit(quickstart_url())
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "127.0.0.1", port)
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path == f"/{env['POSTGRES_DB']}"
    readme = README.read_text()
    assert f"127.0.0.1:{port}" in readme      # the port is documented
    assert quickstart_url() in COMPOSE.read_text()


def documented_columns(table: str) -> set[str]:
    """The backticked names in the README's row for ``pgqueue.<table>``."""
    [row] = [line for line in README.read_text().splitlines()
             if line.startswith(f"| `pgqueue.{table}` |")]
    return set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))


@pytest.mark.parametrize(("table", "states"), [
    ("jobs", {"waiting", "running", "blocked"}),
    ("failed_jobs", set()),
    ("job_history", {"succeeded", "cancelled"}),
])
def test_sql_section_names_real_columns(table: str, states: set[str]) -> None:
    columns = set(schema.metadata.tables[f"pgqueue.{table}"].columns.keys())
    named = documented_columns(table) - states
    assert named, table
    assert named <= columns, f"README names columns {named - columns} that {table} lacks"
    assert "payload" not in documented_columns("failed_jobs")


def test_config_says_what_app_does_without_a_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PGQUEUE_", "QUEUE_", "VELA_")) and k != "DATABASE_URL"}
    r = subprocess.run([sys.executable, "-m", "pgqueue.cli", "config"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pgqueue.App() and the worker need one and raise" in r.stdout
    # ... which is what App() does
    with pytest.raises(ConfigurationError, match="no database configured"):
        _ = pgqueue.App(environ={}).driver
