"""The PostgreSQL driver: the product. Implements every operation of the driver seam over psycopg 3.

Each operation is built once, as an :class:`_Op` (statement, parameters, how to read the rows) or,
when it takes several statements that depend on each other's answers, as a :class:`_Plan` (a
generator that yields steps and receives their results), and run by one of two executors of a few
lines each: :meth:`PostgresDriver._run` (sync) and :meth:`PostgresDriver._arun` (async). So a
sync/async pair of public methods is two one-liners over one builder. Both run on the caller's
connection when one is given (psycopg ``Connection``/``AsyncConnection``, SQLAlchemy
``Connection``/``Session``/``AsyncConnection``/``AsyncSession``), joining its transaction, and on
pgqueue's own pool otherwise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq, sql
from psycopg.rows import RowMaker, tuple_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgqueue._defaults import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_SCHEMA,
    DEFAULT_STATEMENT_TIMEOUT,
    pooler_value,
)
from pgqueue._names import SCHEMA_HEAD
from pgqueue.drivers.base import (
    DEP_CANCEL_REASON,
    DEP_FAIL_REASON,
    FINAL_STATES,
    RESULT_POLL_S,
    Capabilities,
    FailedJob,
    FinalOutcome,
    Finish,
    QueueLimits,
    QueueStats,
    Requeue,
    ScheduleDef,
    ScheduleInfo,
    ScheduleState,
    WakeCallback,
    WorkflowJob,
)
from pgqueue.drivers.postgres import connections
from pgqueue.drivers.postgres.claim_cursor import HEAD, ClaimCursors
from pgqueue.drivers.postgres.listener import PgListener
from pgqueue.drivers.postgres.sql import (
    BEGIN_READ_COMMITTED,
    COMMIT,
    COPY_OPTIONAL,
    SET_LOCAL_JIT_OFF,
    Statements,
    dashboard_statements,
    set_local,
    statements,
)
from pgqueue.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DependencyError,
    JobError,
    JobNotFoundError,
    NotMigratedError,
    PgQueueError,
    TransientDatabaseError,
)
from pgqueue.job import (
    QUARANTINE_AFTER,
    QUARANTINE_REASON,
    RESCUE_REASON,
    RESCUE_SPREAD_S,
    AttemptError,
    FinishedJob,
    Job,
    NewJob,
    NewJobs,
    attempt_errors,
    build_job,
    decode_stored,
)

__all__ = ["PostgresDriver"]

T = TypeVar("T")
Row = tuple[Any, ...]

#: How many times one enqueue with a unique key inserts again when the job holding the key
#: finished between its insert and the look-up of the holder's id.
UNIQUE_INSERT_TRIES = 3
#: Batches at least this large, without unique keys, go through COPY.
COPY_THRESHOLD = 200
#: libpq can pipeline (14+): the limited claim of one queue then costs one round trip.
_PIPELINE = psycopg.Pipeline.is_supported()
#: How often a worker re-reads which of its queues have limits (or keyed jobs).
LIMITS_REFRESH_S = 1.0
#: How many times one claim of a limited queue tries to lock the queue's row while other
#: claimers hold it (a few milliseconds apart), before it gives up until the next claim.
LIMITED_LOCK_TRIES = 3

#: How soon an idle worker looks again at a limited queue whose ready jobs wait for a slot.
LIMITED_RECHECK_S = 0.05
#: The most a worker adds to the wait for a limited queue's rate window, at random: the workers
#: waiting on one window then come one after the other, not all at the same instant.
LIMITED_JITTER_S = 0.005
#: The lease one vacuuming worker holds (a row in ``leases``: safe behind any pooler); it
#: expires by itself if that worker dies mid-vacuum.
VACUUM_LEASE = "vacuum"
VACUUM_LEASE_TTL_S = 600.0

# psycopg's pools log every failed background connection attempt as a WARNING. With no logging
# configured, Python would print those to stderr (its "last resort" handler): eight lines over
# ten seconds that hide the one reason pgqueue reports itself. A NullHandler keeps them off
# stderr; an application that configures logging (or the CLI at DEBUG) still receives them.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

#: SQLSTATE with which the server ends a session that sat idle too long
#: (``idle_session_timeout``): a statement on it was never run, so running it again is safe
_IDLE_SESSION_TIMEOUT = "57P05"


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    query: sql.Composed
    params: dict[str, Any]
    read: Callable[[list[Row]], T]
    #: may run again on a fresh connection if the pooled one turns out to be broken: true for
    #: reads and for writes whose repetition is harmless (a lost claim expires and is rescued)
    retry_safe: bool = True
    #: jsonb columns reach ``read`` as JSON text, for it to decode row by row (see
    #: :func:`_job`): one undecodable row then fails alone instead of the whole fetch
    json_as_text: bool = False


@dataclass(frozen=True, slots=True)
class _Copy:
    """A plan step: ``COPY ... FROM STDIN`` (text format) of ``data``, chunks of whole lines
    (each may be made only when it is sent, see :func:`_copy_data`)."""

    query: sql.Composed
    data: Iterable[str]


#: COPY's text format: these characters in a value are written as backslash escapes
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: rows per chunk handed to COPY
_COPY_CHUNK = 2_000


def _copy_value(value: Any) -> str:
    """One value as COPY's text format writes it (``\\N`` for NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = value if isinstance(value, str) else str(value)
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


def _copy_escaped(texts: list[str]) -> list[str]:
    """``texts`` as COPY's text format writes them (one scan of them all, as they rarely need
    an escape: JSON text has no raw tab or line break, only the odd backslash)."""
    if not _COPY_SPECIAL.search("".join(texts)):
        return texts
    return [t.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(t) else t for t in texts]


def _shape(j: NewJob) -> tuple[Any, ...]:
    """What a job shares with the other jobs of a batch: all but its arguments (and id)."""
    return (j.queue, j.task, j.priority, j.max_attempts, j.run_at, j.delay_s, j.timeout_s,
            j.meta_json, j.concurrency_key)


def _copy_optional(shapes: Iterable[NewJob]) -> tuple[str, ...]:
    """The columns of :data:`COPY_OPTIONAL` that some job of ``shapes`` needs; the others are
    left to the table's defaults (see ``Statements.copy_jobs``)."""
    need = set()
    for j in shapes:
        if j.run_at is not None or j.delay_s:
            need.add("run_at")
        if j.timeout_s is not None:
            need.add("timeout_s")
        if j.meta_json != "{}":
            need.add("meta")
        if j.concurrency_key is not None:
            need.add("concurrency_key")
    return tuple(c for c in COPY_OPTIONAL if c in need)


def _copy_parts(j: NewJob, now: dt.datetime, optional: tuple[str, ...]) -> tuple[str, str]:
    """A row of ``COPY jobs (COPY_COLUMNS, optional)`` is ``<id><head><args><tail>``: the
    (head, tail) of the jobs shaped like ``j``."""
    run_at = j.run_at or (now + dt.timedelta(seconds=j.delay_s or 0.0))
    values = {"run_at": run_at, "timeout_s": j.timeout_s, "meta": j.meta_json,
              "concurrency_key": j.concurrency_key}
    return (f"\t{_copy_value(j.queue)}\t{_copy_value(j.task)}\t",
            "".join(f"\t{_copy_value(v)}" for v in (
                j.priority, j.max_attempts, *(values[c] for c in optional))) + "\n")


def _copy_data(ids: Sequence[int], jobs: Sequence[NewJob],
               now: dt.datetime) -> tuple[tuple[str, ...], Iterable[str]]:
    """The optional columns to send and the lines of ``COPY jobs (COPY_COLUMNS, optional)``,
    in chunks of whole lines. The jobs of a batch usually share everything but their
    arguments (always, for a :class:`NewJobs`): the other columns are formatted once per
    distinct combination. A ``NewJobs`` whose arguments are not serialised yet is
    serialised a chunk at a time as COPY sends it: the client then works while the server
    takes in the chunks before (half the time of a 100,000-job batch was the client's, before
    the server's)."""
    if isinstance(jobs, NewJobs):
        optional = _copy_optional((jobs.template,))
        head, tail = _copy_parts(jobs.template, now, optional)
        return optional, _copy_same(ids, jobs, head, tail)
    shapes = [_shape(j) for j in jobs]
    one_of = dict(zip(shapes, jobs, strict=True))  # a job of each shape
    optional = _copy_optional(one_of.values())
    parts = {k: _copy_parts(j, now, optional) for k, j in one_of.items()}
    return optional, _copy_mixed(ids, [j.args_json for j in jobs], [parts[k] for k in shapes])


def _copy_same(ids: Sequence[int], jobs: NewJobs, head: str, tail: str) -> Iterator[str]:
    for k in range(0, len(jobs), _COPY_CHUNK):
        yield "".join([f"{i}{head}{a}{tail}" for i, a in zip(
            ids[k:k + _COPY_CHUNK], _copy_escaped(jobs.texts(k, k + _COPY_CHUNK)), strict=True)])


def _copy_mixed(ids: Sequence[int], args: list[str],
                parts: list[tuple[str, str]]) -> list[str]:
    return ["".join([f"{i}{p[0]}{a}{p[1]}" for i, a, p in zip(
        ids[k:k + _COPY_CHUNK], _copy_escaped(args[k:k + _COPY_CHUNK]),
        parts[k:k + _COPY_CHUNK], strict=True)])
        for k in range(0, len(args), _COPY_CHUNK)]


def _shapes(jobs: Sequence[NewJob]) -> Sequence[NewJob]:
    """The jobs to look at for what a batch shares: a :class:`NewJobs`'s template stands for
    all its jobs (which differ only in their arguments)."""
    return (jobs.template,) if isinstance(jobs, NewJobs) else jobs


_Step = _Op[Any] | _Copy


@dataclass(frozen=True, slots=True)
class _Plan(Generic[T]):
    """Several statements on one connection, each chosen from the answers before it:
    ``steps()`` is a generator that yields :class:`_Op`/:class:`_Copy` steps, receives each
    step's result, and returns the operation's result."""

    steps: Callable[[], Generator[_Step, Any, T]]
    retry_safe: bool = True
    #: on pgqueue's pool, run in a transaction of its own (on the caller's connection, the
    #: steps join the caller's transaction)
    atomic: bool = False


def _one(op: _Op[T]) -> _Plan[T]:
    def steps() -> Generator[_Step, Any, T]:
        result: T = yield op
        return result
    return _Plan(steps, op.retry_safe)


def _without_jit(op: _Op[T]) -> _Plan[T]:
    """``op`` in a transaction of its own with ``jit`` off (``SET LOCAL``: it ends with the
    transaction, so it also holds behind PgBouncer). The planner's cost of the correlated
    subqueries of ``queue_stats`` is far above ``jit_above_cost``, and compiling them takes
    longer than running them (seconds on a busy machine, for a read of milliseconds); the
    dashboard's reads never gain from it."""
    def steps() -> Generator[_Step, Any, T]:
        yield _Op(SET_LOCAL_JIT_OFF, {}, _none)
        result: T = yield op
        return result
    return _Plan(steps, op.retry_safe, atomic=True)


def _none(rows: list[Row]) -> None:
    return None


def _ids(rows: list[Row]) -> list[int]:
    return [int(r[0]) for r in rows]


def _rows(rows: list[Row]) -> list[Row]:
    return rows


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _final(row: Row) -> FinalOutcome | None:
    """A ``watch_result`` row as an outcome; None while the job is live."""
    state, result_text, error = row
    if state not in FINAL_STATES:
        return None
    return FinalOutcome(str(state), _loads(result_text), error)


def _scalar(rows: list[Row]) -> Any:
    return rows[0][0] if rows else None


def _count(rows: list[Row]) -> int:
    return int(rows[0][0])


def _job(row: Sequence[Any]) -> Job:
    """A job from a row read with ``json_as_text``: its args and meta decoded on their own, so
    that a row that cannot be decoded (nested too deeply, written by SQL) becomes a Job with
    ``decode_error`` -- which the worker archives -- and not an exception for the whole claim.
    (Once per claimed job: no arguments, no meta and no errors -- the usual -- cost no call.)"""
    (id_, queue, task, args_text, priority, attempt, max_attempts, run_at, created_at,
     unique_key, timeout_s, errors, meta_text, state, snoozes) = row
    if args_text == "{}":
        args: dict[str, Any] = {}
        bad_args = None
    else:
        args, bad_args = decode_stored(args_text, "args")
    if meta_text == "{}" or meta_text is None:
        meta: dict[str, Any] = {}
        bad_meta = None
    else:
        meta, bad_meta = decode_stored(meta_text, "meta")
    return build_job(id_, queue, task, args, priority, attempt, max_attempts, run_at,
                     created_at, unique_key, timeout_s, [] if errors is None else _errors(errors),
                     meta, state, bad_args or bad_meta, snoozes)


def _job_rows(cursor: Any) -> RowMaker[Job]:
    """A row factory: each claimed row becomes its :class:`Job` as psycopg reads it."""
    return _job


def _errors(text: str | None) -> list[AttemptError]:
    """A stored ``errors`` list read as text (an undecodable one reads as no errors)."""
    if text is None:
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    return attempt_errors(value) if isinstance(value, list) else []


def _jobs(rows: list[Row]) -> list[Job]:
    return [_job(r) for r in rows]


def _failed(row: Row) -> FailedJob:
    """An archived job from a row read with ``json_as_text`` (args that cannot be decoded read
    as ``{}``: the archive reason says why)."""
    (id_, queue, task, args_text, priority, attempt, max_attempts, errors, reason, enqueued_at,
     failed_at) = row
    return FailedJob(id_, queue, task, decode_stored(args_text)[0], priority, attempt,
                     max_attempts, _errors(errors), reason, enqueued_at, failed_at)


def _finished(row: Row) -> FinishedJob:
    """A history row read with ``json_as_text`` (an undecodable result reads as None)."""
    (id_, queue, task, args_text, priority, state, attempt, max_attempts, errors, result_text,
     worker_id, enqueued_at, started_at, finished_at) = row
    try:
        result = None if result_text is None else json.loads(result_text)
    except (ValueError, RecursionError):
        result = None
    return FinishedJob(id_, queue, task, decode_stored(args_text)[0], priority, state, attempt,
                       max_attempts, _errors(errors), result, worker_id, enqueued_at,
                       started_at, finished_at)


#: Loads ``jsonb`` as its JSON text (decoded later, row by row): psycopg's own text loader (its
#: C version when psycopg's binary package is installed, no Python call per value)
_JsonText = TextLoader


def _by_job_id(item: Finish) -> int:
    return item.job_id


def _array(values: Sequence[int | None]) -> str:
    """An ``int[]``/``bigint[]`` literal of ``values`` (a bound text parameter, cast in the
    statement): a join, where psycopg's list dumper makes Python calls per element."""
    if None in values:
        return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"
    return "{" + ",".join(map(str, values)) + "}"


#: outcome states, written unquoted in an array literal
_PLAIN_STATES = frozenset(("succeeded", "cancelled", "failed"))


def _state_array(states: Sequence[str]) -> str:
    """A ``text[]`` literal of outcome states (plain words: joined as they are)."""
    if _PLAIN_STATES.issuperset(states):
        return "{" + ",".join(states) + "}"
    return _text_array(states)


def _text_array(values: Sequence[str | None]) -> str:
    """A ``text[]``/``jsonb[]`` literal of ``values`` (NULL for None; every other element
    double-quoted with ``\\`` and ``"`` escaped, as array input reads it)."""
    return "{" + ",".join([
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values]) + "}"


def _error_json(error: AttemptError | None) -> str | None:
    return None if error is None else json.dumps(error.to_json(), default=str)


@contextmanager
def _translate() -> Iterator[None]:
    """Map psycopg errors to pgqueue's hierarchy at the driver boundary (see
    :func:`_translated`)."""
    try:
        yield
    except PgQueueError:
        raise
    except psycopg.Error as e:
        raise _translated(e) from e


def _translated(e: psycopg.Error) -> PgQueueError:
    """pgqueue's error for a psycopg one (see :func:`connections.translate`); a missing table
    or function means "not migrated". Raise it ``from e``."""
    if isinstance(e, (pgerrors.UndefinedTable, pgerrors.InvalidSchemaName,
                      pgerrors.UndefinedFunction)):
        return NotMigratedError(
            f"pgqueue's tables are missing or outdated ({e.diag.message_primary}); "
            "run `pgqueue migrate` (or pgqueue.migrations.upgrade(...)) against this database")
    return connections.translate(e)


class PostgresDriver:
    """PostgreSQL driver over psycopg 3 (sync and async pools, created lazily).

    Args:
        dsn: libpq connection string or URL.
        schema: schema of pgqueue's tables (default ``pgqueue``).
        pool_size: connections per pool at most (default 10).
        prepare_threshold: psycopg's (default 5; ``None`` for PgBouncer in transaction mode).
        connect_timeout: seconds to wait for a connection, and for a free one in a pool
            (default 10).
        lock_timeout: seconds a statement on pgqueue's own connections may wait for a lock
            (default 5; ``None`` keeps the server's setting, ``0`` waits forever). A wait cut
            short is a :class:`~pgqueue.TransientDatabaseError`, which the worker retries; so a
            claim or a write stuck behind someone's ``LOCK TABLE`` never keeps a worker from
            stopping. Not applied on a caller's ``conn=``.
        statement_timeout: seconds any statement on pgqueue's own connections may run (default
            ``None``: the role's or database's setting applies; ``0`` disables it). A statement
            it cancels is a :class:`~pgqueue.TransientDatabaseError` too.
        pooler: what stands between pgqueue and PostgreSQL (default ``None``: nothing).
            ``"transaction"``: a pooler that lends a server session per transaction (PgBouncer's
            ``pool_mode = transaction``, most cloud poolers): no server-side prepared
            statements (``prepare_threshold`` is ``None``), no session state at all (the
            timeouts above apply to claims only, with ``SET LOCAL``: set them on the role for
            the rest, ``ALTER ROLE ... SET lock_timeout = '5s'``), and no LISTEN through it --
            wake-ups come from ``listen_url`` when given, else by polling. ``"session"``: a
            pooler that keeps one server session per client (PgBouncer's ``session`` mode):
            everything as without one. With ``None`` (or ``"transaction"``) a LISTEN
            connection that turns out to go through a pooler is refused with a
            :class:`~pgqueue.ConfigurationError` that says so, never a silent loss of wake-ups.
        listen_url: where the worker's LISTEN connection goes (default: ``dsn``; with
            ``pooler="transaction"``: nowhere, the worker polls). Point it at PostgreSQL itself
            (or a session pooler) when ``dsn`` is a transaction pooler.

    The first use of a pool connects once directly: a server that refuses us fails the call at
    once with its own reason (:class:`~pgqueue.CannotConnectError` or
    :class:`~pgqueue.DatabaseUnavailableError`) instead of after the pool's timeout. Pooled
    connections are checked before each use, so one the server closed while idle
    (``idle_session_timeout``, a restart) is replaced instead of failing the call.

    Example::

        driver = PostgresDriver("postgresql://app@db/shop", lock_timeout=2.0)
        app = pgqueue.App(driver=driver)
    """

    name = "postgres"
    capabilities = Capabilities(
        transactional_enqueue=True,
        transactional_completion=True,
        cross_process=True,
        push_wakeups=True,
        history=True,
        periodic=True,
        flow_control=True,
        workflows=True,
    )

    def __init__(self, dsn: str, *, schema: str = DEFAULT_SCHEMA, pool_size: int = 10,
                 prepare_threshold: int | None = 5, connect_timeout: float = 10.0,
                 lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
                 statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
                 pooler: str | None = None, listen_url: str | None = None) -> None:
        try:
            self.pooler = pooler_value(pooler)
        except ValueError as exc:
            raise ConfigurationError(str(exc), key="pooler") from None
        self.dsn = dsn
        self.listen_url = listen_url
        self.schema = schema
        self.sql: Statements = statements(schema)
        self._pool_size = pool_size
        transaction_pooler = self.pooler == "transaction"
        # behind a transaction pooler a prepared statement would stay on a server session
        # that the next transaction may not get; session settings would go to other clients
        self._prepare_threshold = None if transaction_pooler else prepare_threshold
        self._connect_timeout = connect_timeout
        self._session = ({} if transaction_pooler
                         else connections.session_settings(lock_timeout, statement_timeout))
        local = _claim_settings()
        #: the limited claims' SET LOCAL: one statement with nothing to adapt
        self._claim_set_local = set_local(local)
        #: the capped claim's: the same, and its prepared statement's generic plan (see
        #: _CAPPED_SETTINGS)
        self._capped_set_local = set_local({**local, **_CAPPED_SETTINGS})
        self._pool: ConnectionPool | None = None
        # async pools per event loop (a pool's connections belong to the loop that made them):
        # "main" for everything, "claim" for claims (see _CLAIM_SETUP)
        self._apools: dict[tuple[asyncio.AbstractEventLoop, str], AsyncConnectionPool] = {}
        self._lock = threading.Lock()
        #: queues tuple -> (monotonic expiry, which of them need a limited claim: queue ->
        #: whether the capped claim serves it)
        self._limited_cache: dict[tuple[str, ...], tuple[float, dict[str, bool]]] = {}
        #: where each worker's next unlimited claim reads ``jobs_claim_idx`` from
        self.claim_cursors = ClaimCursors()

    # ---- pools and executors ---------------------------------------------------------------
    def _conn_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "prepare_threshold": self._prepare_threshold,
                "connect_timeout": max(1, int(self._connect_timeout))}

    def _sync_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                connections.probe(self.dsn, self._conn_kwargs())  # fail fast, with the reason
                session = self._session
                self._pool = ConnectionPool(
                    self.dsn, min_size=1, max_size=self._pool_size, kwargs=self._conn_kwargs(),
                    open=True, timeout=self._connect_timeout, name="pgqueue-sync",
                    configure=lambda c: connections.session_setup(c, session),
                    check=connections.check_idle)
            return self._pool

    async def _async_pool(self, kind: str = "main") -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._apools.get((loop, kind))
        if pool is None:
            session = self._session

            async def configure(c: psycopg.AsyncConnection[Any]) -> None:
                await connections.asession_setup(c, session)
                if kind == "claim":
                    await _claim_setup(c)
                    # claims read jsonb as text, decoded job by job (see _job)
                    c.adapters.register_loader("jsonb", _JsonText)

            await connections.aprobe(self.dsn, self._conn_kwargs())
            pool = AsyncConnectionPool(
                self.dsn, min_size=1, max_size=self._pool_size if kind == "main" else 2,
                kwargs=self._conn_kwargs(), open=False, timeout=self._connect_timeout,
                name=f"pgqueue-{kind}", configure=configure,
                check=connections.acheck_idle)
            with _translate():
                await pool.open()
            for old in [k for k in self._apools if k[0].is_closed()]:
                del self._apools[old]  # pools of loops that are gone
            self._apools[(loop, kind)] = pool
        return pool

    def _pooled(self, fn: Callable[[psycopg.Connection[Any]], T], retry: bool = True) -> T:
        """Run ``fn`` on a pooled connection. A connection that the server closed while it sat
        idle in the pool (restart, ``pg_terminate_backend``) fails on its first statement: the
        pool drops it (and checks the other idle ones), and, if ``retry``, ``fn`` runs once more
        on a fresh connection. ``retry`` must be false when running ``fn`` twice could do harm
        (an insert): the connection may also have died after the statement committed, so the
        error goes to the caller instead -- unless the server says it ended the session for
        sitting idle (``idle_session_timeout``), which proves the statement never ran.

        Connections are also checked when taken from the pool, so this path is only for one
        that died in between. A connection whose server refuses writes as read-only (``25006``:
        a standby, e.g. a demoted primary after a failover) is closed, so that the pool
        connects again -- to the new primary when the URL lists every host with
        ``target_session_attrs=read-write`` -- and ``fn`` runs again (up to ``pool_size``
        times, as each idle connection may be one): a refused write wrote nothing, so this is
        safe even when ``retry`` is false. When no connection comes within the pool's timeout,
        a direct connection attempt tells why (the server's own reason)."""
        read_only = 0
        attempt = 0
        while attempt < 2:
            attempt += 1
            pool = self._sync_pool()
            try:
                with pool.connection() as c:
                    try:
                        return fn(c)
                    except pgerrors.ReadOnlySqlTransaction:
                        c.close()  # a standby (demoted primary): the pool drops it
                        read_only += 1
                        if read_only > self._pool_size:
                            raise
                        attempt -= 1  # every idle connection may be one: try each
                        continue
                    except psycopg.OperationalError as e:
                        if not c.broken:
                            raise
                        if attempt == 2 or not (retry or _never_ran(e)):
                            pool.check()
                            raise
            except PoolTimeout as e:
                connections.probe(self.dsn, self._conn_kwargs())
                raise self._pool_exhausted() from e
            pool.check()  # drop the other idle connections the server closed as well
        raise AssertionError("unreachable")  # pragma: no cover

    def _pool_exhausted(self) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"no free connection in pgqueue's pool ({self._pool_size} at most) within "
            f"{self._connect_timeout:g} s, although the server accepts connections; raise "
            "pool_size or use fewer connections at once")

    async def _apooled(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                       kind: str = "main", retry: bool = True) -> T:
        """Async twin of :meth:`_pooled`."""
        read_only = 0
        attempt = 0
        while attempt < 2:
            attempt += 1
            pool = await self._async_pool(kind)
            try:
                async with pool.connection() as c:
                    try:
                        return await fn(c)
                    except pgerrors.ReadOnlySqlTransaction:
                        await c.close()  # a standby (demoted primary): the pool drops it
                        read_only += 1
                        if read_only > self._pool_size:
                            raise
                        attempt -= 1  # every idle connection may be one: try each
                        continue
                    except psycopg.OperationalError as e:
                        if not c.broken:
                            raise
                        if attempt == 2 or not (retry or _never_ran(e)):
                            await pool.check()
                            raise
            except PoolTimeout as e:
                await connections.aprobe(self.dsn, self._conn_kwargs())
                raise self._pool_exhausted() from e
            await pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, op: _Op[T] | _Plan[T], conn: Any = None) -> T:
        """Run an operation (sync) on ``conn`` (joining its transaction) or on the pool."""
        plan = op if isinstance(op, _Plan) else _one(op)

        def run(c: psycopg.Connection[Any]) -> T:
            with (c.transaction() if plan.atomic and conn is None else nullcontext(),
                  c.cursor(row_factory=tuple_row) as cur):
                steps = plan.steps()
                try:
                    step = next(steps)
                    while True:
                        step = steps.send(_step(cur, step))
                except StopIteration as done:
                    result: T = done.value
                    return result

        with _translate():
            if conn is not None:
                return run(connections.sync_connection(conn))
            return self._pooled(run, plan.retry_safe)

    async def _arun(self, op: _Op[T] | _Plan[T], conn: Any = None, kind: str = "main") -> T:
        """Async twin of :meth:`_run` (``kind`` picks the pool: ``"claim"`` for claims)."""
        plan = op if isinstance(op, _Plan) else _one(op)

        async def run(c: psycopg.AsyncConnection[Any]) -> T:
            async with (c.transaction() if plan.atomic and conn is None else nullcontext(),
                        c.cursor(row_factory=tuple_row) as cur):
                steps = plan.steps()
                try:
                    step = next(steps)
                    while True:
                        step = steps.send(await _astep(cur, step))
                except StopIteration as done:
                    result: T = done.value
                    return result

        with _translate():
            if conn is not None:
                return await run(await connections.async_connection(conn))
            return await self._apooled(run, kind, plan.retry_safe)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        """Close this event loop's async pool (the sync pool stays: see :meth:`close`)."""
        loop = asyncio.get_running_loop()
        for key in [k for k in self._apools if k[0] is loop]:
            await self._apools.pop(key).close()

    def check(self) -> None:
        """Connect once and read the migration version; raise a clear error otherwise."""
        with _translate(), psycopg.connect(self.dsn, **self._conn_kwargs()) as c:
            try:
                rows = c.execute(self.sql.version).fetchall()
            except (pgerrors.UndefinedTable, pgerrors.InvalidSchemaName) as e:
                raise NotMigratedError(
                    f"schema {self.schema!r} has no pgqueue tables; run `pgqueue migrate`"
                ) from e
        version = rows[0][0] if rows else None
        if version != SCHEMA_HEAD:
            raise NotMigratedError(
                f"schema {self.schema!r} is at migration {version!r}, this pgqueue needs "
                f"{SCHEMA_HEAD!r}; run `pgqueue migrate`"
            )

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection (for the listener, tests, tools)."""
        with _translate():
            return psycopg.connect(self.dsn, **self._conn_kwargs())

    # ---- enqueue -------------------------------------------------------------------------
    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        """Insert jobs (in ``conn``'s transaction when given, else in one of their own); ids in
        input order. A job whose ``unique_key`` is held by a live job is not inserted and that
        job's id is returned instead."""
        if len(jobs) == 1 and not (jobs[0].depends_on or jobs[0].workflow_id):
            params = _insert_one_params(jobs[0])
            try:
                if conn is not None:
                    return _insert_one(connections.sync_connection(conn), self.sql, params)
                return self._pooled(lambda c: _insert_one(c, self.sql, params), retry=False)
            except psycopg.Error as e:
                raise _translated(e) from e
        return self._run(self._insert_plan(jobs), conn) if jobs else []

    async def insert_many_async(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        """Async twin of :meth:`insert_many`."""
        if len(jobs) == 1 and not (jobs[0].depends_on or jobs[0].workflow_id):
            params = _insert_one_params(jobs[0])
            try:
                if conn is not None:
                    return await _ainsert_one(await connections.async_connection(conn),
                                              self.sql, params)
                return await self._apooled(lambda c: _ainsert_one(c, self.sql, params),
                                           retry=False)
            except psycopg.Error as e:
                raise _translated(e) from e
        return await self._arun(self._insert_plan(jobs), conn) if jobs else []

    def _insert_plan(self, jobs: Sequence[NewJob]) -> _Plan[list[int]]:
        """Several jobs (one job: :func:`_insert_one`): reserve their ids, then ``COPY`` (a
        large batch without unique keys) or one ``INSERT ... SELECT FROM unnest``, one
        ``NOTIFY`` per queue, and the holder's id for each unique key that was already held."""
        if any(j.depends_on or j.workflow_id for j in _shapes(jobs)):
            return _Plan(lambda: self._insert_flow_steps(jobs), retry_safe=False, atomic=True)
        return _Plan(lambda: self._insert_bulk_steps(jobs), retry_safe=False, atomic=True)

    def _insert_bulk_steps(self, jobs: Sequence[NewJob]) -> Generator[_Step, Any, list[int]]:
        now, ids = yield _Op(self.sql.reserve_ids, {"n": len(jobs)}, lambda rows: rows[0])
        if len(jobs) >= COPY_THRESHOLD and all(j.unique_key is None for j in _shapes(jobs)):
            optional, data = _copy_data(ids, jobs, now)
            yield _Copy(self.sql.copy_jobs(optional), data)
            inserted = None  # no unique keys: every row went in
        else:
            rows = []
            for i, j in zip(ids, jobs, strict=True):
                run_at = j.run_at or (now + dt.timedelta(seconds=j.delay_s or 0.0))
                rows.append((i, j.queue, j.task, j.args_json, j.priority, j.max_attempts,
                             run_at, j.unique_key, j.timeout_s, j.meta_json, j.concurrency_key))
            names = ("ids", "queues", "tasks", "args", "priorities", "max_attempts", "run_ats",
                     "unique_keys", "timeouts", "metas", "concurrency_keys")
            columns = {n: list(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)}
            inserted = set((yield _Op(self.sql.insert_many, columns, _ids)))
        yield _Op(self.sql.notify_queues, {"queues": sorted({j.queue for j in _shapes(jobs)})},
                  _none)
        if inserted is None:
            return list(ids)
        out = []
        for i, j in zip(ids, jobs, strict=True):
            if i in inserted:
                out.append(i)
            elif j.unique_key is not None:  # held by a live job: return the holder's id
                out.append(int((yield _Op(self.sql.id_by_unique_key,
                                          {"unique_key": j.unique_key}, _scalar))))
            else:  # cannot happen: only unique-key conflicts skip rows
                raise JobError(f"job {i} was not inserted")
        return out

    # ---- workflows -----------------------------------------------------------------------
    def _resolve_deps_steps(self, ids: Sequence[int]) -> Generator[
            _Step, Any, tuple[set[int], dict[int, tuple[str, str | None]]]]:
        """Watch the live jobs among ``ids`` (their completion then releases the edges about to
        be written) and read the outcome of the others: (live ids, {id: (outcome, result)} of
        those no longer live); an id in neither does not exist. ``watch_live`` in sql.py says
        why no completion slips between the two."""
        if not ids:
            return set(), {}
        live = set((yield _Op(self.sql.watch_live, {"ids": list(ids)}, _ids)))
        rest = [i for i in ids if i not in live]
        finished: dict[int, tuple[str, str | None]] = {}
        if rest:
            rows = yield _Op(self.sql.lookup_finished, {"ids": rest}, _rows)
            for r in rows:
                finished.setdefault(int(r[0]), (str(r[1]), r[2]))
        return live, finished

    def _insert_flow_steps(self, jobs: Sequence[NewJob]) -> Generator[_Step, Any, list[int]]:
        """A batch with dependencies (or a workflow), in one transaction: reserve ids, resolve
        the existing jobs depended on, insert the jobs (``blocked`` while they have
        dependencies), their edges and workflow membership, release those whose dependencies
        all finished already, and wake the queues of the ready ones."""
        now, ids = yield _Op(self.sql.reserve_ids, {"n": len(jobs)}, lambda rows: rows[0])
        ext = sorted({d.job_id for j in jobs for d in j.depends_on if d.job_id is not None})
        live, finished = yield from self._resolve_deps_steps(ext)
        unknown = [i for i in ext if i not in live and i not in finished]
        if unknown:
            raise DependencyError(
                f"depends_on: no job {unknown[0]} (not live, not in the history nor the "
                "archive); pass the id of an existing job")
        watched = {d.index for j in jobs for d in j.depends_on if d.index is not None}
        cols: dict[str, list[Any]] = {k: [] for k in (
            "ids", "queues", "tasks", "args", "priorities", "max_attempts", "run_ats",
            "timeouts", "metas", "concurrency_keys", "states", "deps_left", "watched")}
        edges: dict[str, list[Any]] = {k: [] for k in (
            "job_ids", "dep_ids", "policies", "args", "positions", "awaited", "outcomes",
            "results")}
        settled = []
        for n, (i, j) in enumerate(zip(ids, jobs, strict=True)):
            left = 0
            for d in j.depends_on:
                dep_id = d.job_id if d.job_id is not None else ids[d.index or 0]
                outcome, result = finished.get(dep_id, (None, None)) if d.job_id else (
                    None, None)
                if outcome is None:
                    left += 1
                elif outcome != "succeeded" and j.on_dependency_failure != "run":
                    raise DependencyError(
                        f"depends_on: job {dep_id} already {outcome}; a job cannot wait for it "
                        f"(on_dependency_failure={j.on_dependency_failure!r}). Re-drive it "
                        "first, or enqueue with on_dependency_failure='run'")
                for k, v in zip(edges, (i, dep_id, j.on_dependency_failure, d.arg, d.pos,
                                        False, outcome, result), strict=True):
                    edges[k].append(v)
            if j.depends_on and not left:
                settled.append(i)
            run_at = j.run_at or (now + dt.timedelta(seconds=j.delay_s or 0.0))
            for k, v in zip(cols, (i, j.queue, j.task, j.args_json, j.priority, j.max_attempts,
                                   run_at, j.timeout_s, j.meta_json, j.concurrency_key,
                                   "blocked" if j.depends_on else "waiting", left,
                                   n in watched), strict=True):
                cols[k].append(v)
        yield _Op(self.sql.insert_flow_jobs, cols, _none)
        if edges["job_ids"]:
            yield _Op(self.sql.insert_edges, edges, _none)
        flows: dict[str, list[int]] = {}
        for i, j in zip(ids, jobs, strict=True):
            if j.workflow_id is not None:
                flows.setdefault(j.workflow_id, []).append(i)
        for flow, members in flows.items():
            yield _Op(self.sql.insert_workflow_jobs, {"workflow": flow, "ids": members}, _none)
        if settled:
            yield _Op(self.sql.release_ready, {"ids": settled}, _none)
        ready = sorted({j.queue for j in jobs if not j.depends_on})
        if ready:
            yield _Op(self.sql.notify_queues, {"queues": ready}, _none)
        return list(ids)

    def _release_steps(self, ids: list[int], states: list[str],
                       results: list[str | None]) -> Generator[_Step, Any, None]:
        """Release the dependents of jobs that just finished (``states``), in the caller's
        transaction: record the outcomes on the edges, unblock the dependents whose
        dependencies all finished, and cancel or fail those whose policy says so -- then the
        same for the dependents of those, until nothing is left (a cascade down the graph)."""
        while ids:
            rows = yield _Op(self.sql.release_mark, {"ids": ids, "states": states,
                                                     "results": results}, _rows)
            rows = [r for r in rows if r[0] is not None]
            ready = [int(r[0]) for r in rows if not r[2] and r[1] <= 0]
            cancel = [int(r[0]) for r in rows if r[2] and r[3] == "cancel"]
            fail = [int(r[0]) for r in rows if r[2] and r[3] == "fail"]
            if ready:
                yield _Op(self.sql.release_ready, {"ids": ready}, _none)
            ids, states = [], []
            if cancel:
                ids += (yield _Op(self.sql.release_cancel,
                                  {"ids": cancel, "reason": DEP_CANCEL_REASON}, _ids))
                states += ["cancelled"] * (len(ids) - len(states))
            if fail:
                ids += (yield _Op(self.sql.release_fail,
                                  {"ids": fail, "reason": DEP_FAIL_REASON}, _ids))
                states += ["failed"] * (len(ids) - len(states))
            results = [None] * len(ids)

    def _finish_watched_plan(self, items: Sequence[Finish],
                             worker_id: str) -> _Plan[list[int]]:
        """Finish watched jobs (left alone by ``finish_many``) and release their dependents,
        in one transaction."""
        def steps() -> Generator[_Step, Any, list[int]]:
            rows = yield _Op(self.sql.finish_watched, self._finish_op(items, worker_id).params,
                             _rows)
            if rows:
                yield from self._release_steps([int(r[0]) for r in rows],
                                               [str(r[1]) for r in rows], [r[2] for r in rows])
            return [int(r[0]) for r in rows]
        return _Plan(steps, atomic=True)

    async def park(self, job_id: int, *, worker_id: str, attempt: int | None,
                   awaited: Sequence[int]) -> tuple[bool, list[int]]:
        """Park a running job until ``awaited`` finish (:class:`pgqueue.Await`): (parked, the
        awaited ids that do not exist -- then nothing is parked)."""
        def steps() -> Generator[_Step, Any, tuple[bool, list[int]]]:
            live, finished = yield from self._resolve_deps_steps(awaited)
            missing = [i for i in awaited if i not in live and i not in finished]
            if missing:
                return False, missing
            parked = yield _Op(self.sql.park, {"id": job_id, "worker": worker_id,
                                               "attempt": attempt, "deps_left": len(live)},
                               _ids)
            if not parked:
                return False, []
            yield _Op(self.sql.insert_edges, {
                "job_ids": [job_id] * len(awaited), "dep_ids": list(awaited),
                "policies": ["run"] * len(awaited), "args": [None] * len(awaited),
                "positions": [None] * len(awaited), "awaited": [True] * len(awaited),
                "outcomes": [finished.get(i, (None, None))[0] for i in awaited],
                "results": [finished.get(i, (None, None))[1] for i in awaited]}, _none)
            if not live:
                yield _Op(self.sql.release_ready, {"ids": [job_id]}, _none)
            return True, []
        return await self._arun(_Plan(steps, retry_safe=False, atomic=True))

    def _wait_check(self, c: psycopg.Connection[Any], job_id: int) -> FinalOutcome | None:
        # twice: a job that finishes while the first look waits for its row reads as gone
        # (its history row is newer than that statement's snapshot)
        for _ in range(2):
            row = c.execute(self.sql.watch_result, {"id": job_id}).fetchone()
            if row is not None:
                return _final(row)
        raise JobNotFoundError(f"no job {job_id} (live, in history or failed)")

    def wait_result(self, job_id: int, timeout_s: float | None) -> FinalOutcome | None:
        """Wait until job ``job_id`` has finished (NOTIFY on its completion; a poll every
        :data:`~pgqueue.drivers.base.RESULT_POLL_S` seconds as a fallback); its outcome, or
        None at the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with _translate(), psycopg.connect(self.dsn, **self._conn_kwargs()) as c:
            c.execute(self.sql.listen_done)
            while True:
                found = self._wait_check(c, job_id)
                if found is not None:
                    return found
                wait = RESULT_POLL_S if deadline is None else min(
                    RESULT_POLL_S, deadline - time.monotonic())
                if wait <= 0:
                    return None
                for _ in c.notifies(timeout=wait, stop_after=1):
                    pass

    async def wait_result_async(self, job_id: int,
                                timeout_s: float | None) -> FinalOutcome | None:
        """Async twin of :meth:`wait_result`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with _translate():
            c = await psycopg.AsyncConnection.connect(self.dsn, **self._conn_kwargs())
            async with c:
                await c.execute(self.sql.listen_done)
                while True:
                    row = None
                    for _ in range(2):  # see _wait_check
                        cur = await c.execute(self.sql.watch_result, {"id": job_id})
                        row = await cur.fetchone()
                        if row is not None:
                            break
                    if row is None:
                        raise JobNotFoundError(f"no job {job_id} (live, in history or failed)")
                    found = _final(row)
                    if found is not None:
                        return found
                    wait = RESULT_POLL_S if deadline is None else min(
                        RESULT_POLL_S, deadline - time.monotonic())
                    if wait <= 0:
                        return None
                    async for _ in c.notifies(timeout=wait, stop_after=1):
                        pass

    def _workflow_op(self, workflow_id: str) -> _Op[list[WorkflowJob]]:
        return _Op(self.sql.workflow_state, {"workflow": workflow_id},
                   lambda rows: [WorkflowJob(*r) for r in rows])

    def workflow(self, workflow_id: str) -> list[WorkflowJob]:
        """Every job of a workflow with its state, in workflow order."""
        return self._run(self._workflow_op(workflow_id))

    async def workflow_async(self, workflow_id: str) -> list[WorkflowJob]:
        return await self._arun(self._workflow_op(workflow_id))

    def get_step(self, job_id: int, name: str, *, conn: Any = None) -> tuple[str, Any] | None:
        """A durable step's checkpoint: (function name, decoded result), or None."""
        row = self._run(_Op(self.sql.get_step, {"id": job_id, "name": name}, _rows), conn)
        return None if not row else (row[0][0], _loads(row[0][1]))

    def put_step(self, job_id: int, name: str, fn: str, result_json: str, *,
                 conn: Any = None) -> None:
        """Write a durable step's checkpoint (in ``conn``'s transaction when given)."""
        self._run(_Op(self.sql.put_step, {"id": job_id, "name": name, "fn": fn,
                                          "result": result_json}, _none, retry_safe=False),
                  conn)

    # ---- worker --------------------------------------------------------------------------
    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str,
                    lease_s: float) -> list[Job]:
        """Claim up to ``limit`` ready jobs of ``queues``. Queues without limits (and without
        keyed jobs) take the one-statement claim; limited ones the limited claim (see
        ``claim_limited`` in :mod:`pgqueue.drivers.postgres.sql`)."""
        limited = await self._limited_queues(queues)
        if not limited:
            return await self._claim_unlimited(queues, limit, worker_id, lease_s)
        # limited queues first: their limits bound what they take, so a busy unlimited queue
        # cannot starve them (the other way round it could)
        if len(limited) == 1 and _PIPELINE:
            [(queue, capped)] = limited.items()
            jobs = await self._claim_one_limited(queue, capped, limit, worker_id, lease_s)
        else:
            jobs = await self._arun(self._limited_plan(
                sorted(limited), limit, worker_id, lease_s), kind="claim")
        free = [q for q in queues if q not in limited]
        if free and len(jobs) < limit:
            jobs = jobs + await self._claim_unlimited(free, limit - len(jobs), worker_id,
                                                      lease_s)
        return jobs

    def limits_hold(self, queues: Sequence[str]) -> bool:
        """Whether the last look at ``queues`` (see :meth:`_limited_queues`) found any that
        the limited claim serves: limits, or keyed jobs (a key's slot frees when its job's
        outcome is written)."""
        cached = self._limited_cache.get(tuple(queues))
        return cached is None or bool(cached[1])

    async def _limited_queues(self, queues: Sequence[str], *,
                              ahead: float = 0.0) -> dict[str, bool]:
        """Which of ``queues`` need a limited claim, each with whether the capped claim serves
        it (re-read at most every :data:`LIMITS_REFRESH_S` seconds: a new limit applies within
        that time; meanwhile the unlimited claim already leaves a limited queue alone, and the
        capped claim leaves keyed jobs and rate-limited queues alone, so nothing overshoots).
        ``ahead``: re-read it already when it would be stale within that many seconds (the
        idle path does, so that the claim that follows a NOTIFY finds it fresh and takes one
        round trip, not two)."""
        key = tuple(queues)
        now = time.monotonic()
        cached = self._limited_cache.get(key)
        if cached is not None and cached[0] > now + ahead:
            return cached[1]
        found: dict[str, bool] = await self._arun(_Op(
            self.sql.limited_queues, {"queues": list(queues)},
            lambda rows: {str(r[0]): bool(r[1]) for r in rows}), kind="claim")
        self._limited_cache[key] = (now + LIMITS_REFRESH_S, found)
        return found

    async def _claim_one_limited(self, queue: str, capped: bool, limit: int, worker_id: str,
                                 lease_s: float) -> list[Job]:
        """The limited claim of one queue in pipeline mode: BEGIN, the queue-row lock, the
        claim and COMMIT go out together and come back in one round trip. Still two statements
        in one READ COMMITTED transaction, the claim after the lock: the server runs them in
        order, so the claim's snapshot is taken after the lock is granted. A queue with only
        concurrency limits and no keyed jobs waiting takes the small ``claim_capped``."""
        params = {"queue": queue, "limit": limit, "worker": worker_id, "lease": lease_s}
        lock_params: dict[str, Any] = {"queue": queue, "queues": [queue]}
        lock, claim = ((self.sql.lock_queue, self.sql.claim_capped) if capped else
                       (self.sql.lock_limited_queues, self.sql.claim_limited))

        async def run(c: psycopg.AsyncConnection[Any]) -> list[Job] | None:
            # (the claim pool's connections read jsonb as text: see _async_pool)
            async with c.cursor(row_factory=tuple_row) as cur, \
                    c.cursor(row_factory=tuple_row) as locked:
                # one round trip: leaving the pipeline sends everything, COMMIT included;
                # the settings are the transaction's own (SET LOCAL: nothing stays on a
                # server session a pooler lends to another client)
                # (a failed statement makes the server skip the COMMIT: the pool's connection
                # block rolls the transaction back before the connection goes back)
                async with c.pipeline():
                    await c.execute(_rendered(BEGIN_READ_COMMITTED, cur))
                    await c.execute(_rendered(
                        self._capped_set_local if capped else self._claim_set_local, cur))
                    await locked.execute(_rendered(lock, cur), lock_params)
                    await cur.execute(_rendered(claim, cur), params)
                    await c.execute(_rendered(COMMIT, cur))
                rows = await cur.fetchall()
                if not rows and not await locked.fetchall():
                    return None  # another claimer held the queue's row: nothing was claimed
            return _jobs(rows)

        with _translate():
            for _ in range(LIMITED_LOCK_TRIES - 1):
                jobs = await self._apooled(run, "claim", retry=True)
                if jobs is not None:
                    return jobs
                # the other claim takes a few milliseconds: look again soon, not after the
                # producer's idle recheck (a slot freed by our own jobs would sit unused)
                await asyncio.sleep(random.uniform(0.002, 0.01))
            return await self._apooled(run, "claim", retry=True) or []

    def _limited_plan(self, queues: list[str], limit: int, worker_id: str,
                      lease_s: float) -> _Plan[list[Job]]:
        """Lock the limited queues' rows, then claim each within its limits, in one READ
        COMMITTED transaction (the claim pool's connections are set to it)."""
        def steps() -> Generator[_Step, Any, list[Job]]:
            yield _Op(self._claim_set_local, {}, _none)
            yield _Op(self.sql.lock_limited_queues, {"queues": queues}, _none)
            out: list[Job] = []
            for q in queues:
                if len(out) >= limit:
                    break
                out += (yield _Op(self.sql.claim_limited, {
                    "queue": q, "limit": limit - len(out), "worker": worker_id,
                    "lease": lease_s}, _jobs, json_as_text=True))
            return out
        return _Plan(steps, retry_safe=True, atomic=True)

    async def set_queue_limits(self, queue: str, limits: QueueLimits) -> None:
        """Store a queue's limits (None: no limit) in ``queues``; claims see them at once."""
        await self._arun(self._limits_op(queue, limits))

    def set_queue_limits_sync(self, queue: str, limits: QueueLimits) -> None:
        """Sync twin of :meth:`set_queue_limits`."""
        self._run(self._limits_op(queue, limits))

    def _limits_op(self, queue: str, limits: QueueLimits) -> _Op[None]:
        self._limited_cache.clear()
        return _Op(self.sql.set_limits, {
            "queue": queue, "concurrency": limits.concurrency,
            "key_concurrency": limits.key_concurrency, "rate_limit": limits.rate_limit,
            "rate_period_s": limits.rate_period_s, "key_rate_limit": limits.key_rate_limit,
            "key_rate_period_s": limits.key_rate_period_s}, _none, retry_safe=True)

    async def _claim_unlimited(self, queues: Sequence[str], limit: int, worker_id: str,
                               lease_s: float, *, from_head: bool = False) -> list[Job]:
        """The one-statement claim, on the claim pool (whose connections read jsonb as text),
        each row made a :class:`Job` as it is read."""
        start = self.claim_cursors.start(worker_id, queues, from_head=from_head)
        params: dict[str, Any] = {"limit": limit, "worker": worker_id, "lease": lease_s}
        if len(queues) == 1:
            params["queue"] = queues[0]
            params["after_p"], params["after_r"], params["after_i"] = start.after[0]
            query = self.sql.claim_one(limit)
        else:
            params["queues"] = list(queues)
            params["after_p"] = [k[0] for k in start.after]
            params["after_r"] = [k[1] for k in start.after]
            params["after_i"] = [k[2] for k in start.after]
            query = self.sql.claim_many(limit, len(queues))

        async def run(c: psycopg.AsyncConnection[Any]) -> list[Job]:
            async with c.cursor(row_factory=_job_rows) as cur:
                await cur.execute(_rendered(query, cur), params)
                return await cur.fetchall()

        with _translate():
            jobs = await self._apooled(run, "claim")
        self.claim_cursors.done(start, jobs, limit)
        if (not jobs and limit > 0 and not start.from_head
                and any(k != HEAD for k in start.after)):
            # An empty claim must still mean that no ready job was left: callers stop on it
            # (TestQueue.drain, a burst loop of one's own). Jobs may wait behind the key (a
            # higher priority enqueued meanwhile): read from the head now.
            return await self._claim_unlimited(queues, limit, worker_id, lease_s,
                                               from_head=True)
        return jobs

    async def finish_many(self, items: Sequence[Finish], *, worker_id: str) -> list[int]:
        """Finish jobs in one statement; watched ones (with dependents or result waiters),
        which that statement leaves alone, then in a transaction that also releases their
        dependents."""
        done = await self._arun(self._finish_op(items, worker_id))
        if len(done) < len(items):
            got = set(done)
            rest = [i for i in items if i.job_id not in got]
            done = done + await self._arun(self._finish_watched_plan(rest, worker_id))
        return done

    def _finish_op(self, items: Sequence[Finish], worker_id: str) -> _Op[list[int]]:
        """``finish_many`` of ``items``, sorted by id (the statement finds each row's place
        by binary search); its arrays go as literals (see :func:`_array`)."""
        items = sorted(items, key=_by_job_id)
        return _Op(self.sql.finish_many, {
            "ids": _array([i.job_id for i in items]),
            "attempts": _array([i.attempt for i in items]),
            "states": _state_array([i.state for i in items]),
            "results": _text_array([i.result_json for i in items]), "worker": worker_id}, _ids)

    def _finish_one_op(self, job_id: int, worker_id: str, result_json: str | None,
                       attempt: int | None) -> _Op[list[int]]:
        return _Op(self.sql.finish_one, {
            "id": job_id, "worker": worker_id, "state": "succeeded", "result": result_json,
            "attempt": attempt}, _ids)

    def _finish_in_tx_plan(self, job_id: int, worker_id: str, result_json: str | None,
                           attempt: int | None) -> _Plan[bool]:
        """Finish one job in the caller's transaction, and release its dependents there."""
        def steps() -> Generator[_Step, Any, bool]:
            done = yield self._finish_one_op(job_id, worker_id, result_json, attempt)
            if done:
                yield from self._release_steps([job_id], ["succeeded"], [result_json])
            return bool(done)
        return _Plan(steps, retry_safe=False)

    def finish_in_transaction(self, conn: Any, job_id: int, *, worker_id: str,
                              result_json: str | None = None,
                              attempt: int | None = None) -> bool:
        """Mark a running job succeeded inside the caller's transaction (sync); False if the
        job is no longer held by ``worker_id`` at ``attempt``."""
        return self._run(self._finish_in_tx_plan(job_id, worker_id, result_json, attempt),
                         conn)

    async def finish_in_transaction_async(self, conn: Any, job_id: int, *, worker_id: str,
                                          result_json: str | None = None,
                                          attempt: int | None = None) -> bool:
        """Async twin of :meth:`finish_in_transaction`."""
        return await self._arun(
            self._finish_in_tx_plan(job_id, worker_id, result_json, attempt), conn)

    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]:
        return await self._arun(_Op(self.sql.requeue_many, {
            "ids": [i.job_id for i in items], "attempts": [i.attempt for i in items],
            "delays": [i.delay_s for i in items],
            "count_attempt": [i.count_attempt for i in items],
            "errors": [_error_json(i.error) for i in items],
            "snooze": [i.snooze for i in items],
            "max_attempts": [i.max_attempts for i in items],
            "worker": worker_id}, _ids))

    async def archive(self, job_id: int, *, worker_id: str, error: AttemptError,
                      reason: str, attempt: int | None = None) -> bool:
        """Archive a running job and release its dependents, in one transaction."""
        def steps() -> Generator[_Step, Any, bool]:
            done = yield _Op(self.sql.archive, {
                "id": job_id, "worker": worker_id, "error": _error_json(error),
                "reason": reason, "attempt": attempt}, _ids)
            if done:
                yield from self._release_steps([job_id], ["failed"], [None])
            return bool(done)
        return await self._arun(_Plan(steps, atomic=True))

    async def next_run_at(self, queues: Sequence[str], *,
                          worker_id: str | None = None) -> dt.datetime | None:
        """When a claim of ``queues`` may next take a job. With limited queues among them,
        ready jobs there wait for their rate window to free a start (the database says in how
        many seconds, on its own clock: ``next_claim_in``), or for a slot that another worker's
        completion frees (looked at again after :data:`LIMITED_RECHECK_S`); a small jitter
        keeps the workers waiting on one window from claiming all at the same instant.

        With ``worker_id``, unlimited queues are read where that worker's claim cursor says
        (:meth:`ClaimCursors.next_run_at_from`): after its keys while reading from the head is
        costly, and then the answer is no later than the cursor's next sweep."""
        limited = await self._limited_queues(queues, ahead=LIMITS_REFRESH_S / 2)
        if not limited:
            after, due_in = self.claim_cursors.next_run_at_from(worker_id, queues)
            # without JIT: the planner prices the loose scan's recursion far above
            # jit_above_cost once the statistics have seen a large backlog, and compiling it
            # took 126 ms for a read of 0.5 ms
            value: dt.datetime | None = await self._aread_without_jit(_Op(
                self.sql.next_run_at(len(queues)), {
                    "queues": list(queues), "after_p": [k[0] for k in after],
                    "after_r": [k[1] for k in after], "after_i": [k[2] for k in after]},
                _scalar))
            if due_in is not None:
                sweep = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=due_in)
                value = sweep if value is None else min(value, sweep)
            return value
        wait: float | None = await self._arun(_Op(self.sql.next_claim_in, {
            "queues": list(queues), "limited": sorted(limited),
            "recheck": LIMITED_RECHECK_S}, _scalar))
        if wait is None:
            return None
        wait = max(0.0, wait) + random.uniform(0.0, LIMITED_JITTER_S)
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)

    async def _aread_without_jit(self, op: _Op[T]) -> T:
        """The read ``op`` with ``jit`` off, as :func:`_without_jit` runs it, but in one round
        trip: ``BEGIN``, ``SET LOCAL``, the read and ``COMMIT`` pipelined (an idle worker asks
        ``next_run_at`` after every short claim). Without pipeline support, the plan."""
        if not _PIPELINE:
            return await self._arun(_without_jit(op))

        async def run(c: psycopg.AsyncConnection[Any]) -> T:
            async with c.cursor(row_factory=tuple_row) as cur:
                async with c.pipeline():
                    await c.execute(_rendered(BEGIN_READ_COMMITTED, cur))
                    await c.execute(_rendered(SET_LOCAL_JIT_OFF, cur))
                    await cur.execute(_rendered(op.query, cur), op.params)
                    await c.execute(_rendered(COMMIT, cur))
                return op.read(await cur.fetchall())

        with _translate():
            return await self._apooled(run, "main", op.retry_safe)

    async def now(self) -> dt.datetime:
        query = sql.Composed([sql.SQL("SELECT clock_timestamp()")])
        value: dt.datetime = await self._arun(_Op(query, {}, _scalar))
        return value

    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None:
        import os
        import socket

        await self._arun(_Op(self.sql.register_worker, {
            "worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": list(queues), "concurrency": concurrency}, _none))

    async def unregister_worker(self, *, worker_id: str) -> None:
        self.claim_cursors.forget(worker_id)
        await self._arun(_Op(self.sql.unregister_worker, {"worker": worker_id}, _none))

    async def heartbeat(self, *, worker_id: str, lease_s: float, job_ids: Sequence[int]) -> None:
        await self._arun(_Op(self.sql.heartbeat, {"worker": worker_id, "lease": lease_s,
                                                  "ids": list(job_ids)}, _none))

    async def rescue_expired(self, *, limit: int = 1000, reason: str = RESCUE_REASON,
                             quarantine_after: int = QUARANTINE_AFTER,
                             quarantine_reason: str = QUARANTINE_REASON,
                             spread_s: float = RESCUE_SPREAD_S) -> tuple[list[int], list[int]]:
        def read(rows: list[Row]) -> tuple[list[int], list[int]]:
            return ([r[1] for r in rows if r[0] == "rescued"],
                    [r[1] for r in rows if r[0] == "failed"])
        params = {"limit": limit, "reason": reason, "after": max(1, int(quarantine_after)),
                  "qreason": quarantine_reason, "spread": max(0.0, float(spread_s))}

        def steps() -> Generator[_Step, Any, tuple[list[int], list[int]]]:
            back, failed = yield _Op(self.sql.rescue_expired, params, read)
            if failed:  # quarantined jobs failed for good: release their dependents
                yield from self._release_steps(failed, ["failed"] * len(failed),
                                               [None] * len(failed))
            return back, failed
        return await self._arun(_Plan(steps, atomic=True))

    async def prune_workers(self, *, older_than_s: float) -> None:
        await self._arun(_Op(self.sql.prune_workers, {"older_than": older_than_s}, _none))

    async def cancel_requested(self, *, worker_id: str,
                               job_ids: Sequence[int] | None = None) -> list[int]:
        if job_ids is None:
            return await self._arun(_Op(self.sql.cancel_requested, {"worker": worker_id},
                                        _ids))
        if not job_ids:
            return []
        return await self._arun(_Op(self.sql.cancel_requested_ids, {
            "worker": worker_id, "ids": list(job_ids)}, _ids))

    async def vacuum_if_needed(self, *, min_dead: int = 20_000, dead_ratio: float = 0.1,
                               min_growth: int = 256, growth_ratio: float = 4.0) -> bool:
        """VACUUM ``jobs`` when the statistics show at least ``min_dead`` dead rows and
        ``dead_ratio`` of the live ones. Otherwise ANALYZE it when its file has at least
        ``min_growth`` pages and ``growth_ratio`` times the pages its planner statistics
        assume: the sessions' cached plans of the hot statements (the claims, the completion)
        were made for the table as it was, and a plan made while it was nearly empty reads
        all of it (a sequential scan: 160 ms a claim with 300,000 jobs); both refresh the
        statistics and make every session plan those statements again. One worker at a time.
        Returns whether it vacuumed or analyzed."""
        dead, live, planned, pages = await self._arun(_Op(
            self.sql.jobs_dead_tuples, {}, lambda rows: rows[0] if rows else (0, 0, 0, 0)))
        if dead >= max(min_dead, dead_ratio * live):
            query = self.sql.vacuum_jobs
        elif pages >= max(min_growth, growth_ratio * planned):
            query = self.sql.analyze_jobs
        else:
            return False

        holder = f"vacuum-{uuid.uuid4().hex}"
        if not await self.acquire_lease(VACUUM_LEASE, holder=holder, ttl_s=VACUUM_LEASE_TTL_S):
            return False  # another worker is vacuuming
        try:
            await self._arun(_Op(query, {}, _none))
        finally:
            await self.release_lease(VACUUM_LEASE, holder=holder)
        return True

    async def ensure_partitions(self, days: int = 7) -> None:
        await self._arun(_Op(self.sql.ensure_partitions, {"days": days}, _none))

    def drop_history_before(self, cutoff: dt.datetime) -> int:
        return int(self._run(_Op(self.sql.drop_history_before, {"cutoff": cutoff}, _scalar)))

    # ---- periodic jobs and leases ------------------------------------------------------------
    async def sync_schedules(self, schedules: Sequence[ScheduleDef]) -> None:
        await self._arun(_Op(self.sql.sync_schedules, {
            "names": [d.name for d in schedules], "specs": [d.spec for d in schedules],
            "zones": [d.timezone for d in schedules],
            "catch_ups": [d.catch_up for d in schedules],
            "tasks": [d.job.task for d in schedules], "queues": [d.job.queue for d in schedules],
            "args": [d.job.args_json for d in schedules],
            "priorities": [d.job.priority for d in schedules],
            "max_attempts": [d.job.max_attempts for d in schedules],
            "timeouts": [d.job.timeout_s for d in schedules],
            "metas": [d.job.meta_json for d in schedules],
            "next_ticks": [d.next_tick for d in schedules]}, _none))

    async def schedule_states(self, names: Sequence[str],
                              ) -> tuple[dt.datetime, dict[str, ScheduleState]]:
        def read(rows: list[Row]) -> tuple[dt.datetime, dict[str, ScheduleState]]:
            now: dt.datetime = rows[0][0]  # one row per name, at least one name
            states = {r[1]: ScheduleState(r[2], bool(r[3])) for r in rows if r[2] is not None}
            return now, states
        if not names:
            return await self.now(), {}
        return await self._arun(_Op(self.sql.schedule_states, {"names": list(names)}, read))

    async def claim_ticks(self, name: str, *, expected: dt.datetime, new_last: dt.datetime,
                          next_tick: dt.datetime | None, jobs: Sequence[NewJob],
                          ) -> list[int] | None:
        template = jobs[0] if jobs else NewJob("-", "-", "{}")
        def read(rows: list[Row]) -> list[int] | None:
            if not any(r[0] == "claimed" for r in rows):
                return None
            return [int(r[1]) for r in rows if r[0] == "job"]
        return await self._arun(_Op(self.sql.claim_ticks, {
            "name": name, "expected": expected, "new_last": new_last, "next_tick": next_tick,
            "queue": template.queue, "task": template.task, "args": template.args_json,
            "priority": template.priority, "max_attempts": template.max_attempts,
            "timeout_s": template.timeout_s, "metas": [j.meta_json for j in jobs]}, read,
            retry_safe=False))

    def _list_schedules_op(self) -> _Op[list[ScheduleInfo]]:
        return _Op(self.sql.list_schedules, {}, lambda rows: [ScheduleInfo(*r) for r in rows])

    def list_schedules(self) -> list[ScheduleInfo]:
        return self._run(self._list_schedules_op())

    async def list_schedules_async(self) -> list[ScheduleInfo]:
        return await self._arun(self._list_schedules_op())

    def _schedule_paused_op(self, name: str, paused: bool) -> _Op[bool]:
        return _Op(self.sql.set_schedule_paused, {"name": name, "paused": paused},
                   lambda rows: bool(rows))

    def set_schedule_paused(self, name: str, paused: bool) -> bool:
        return self._run(self._schedule_paused_op(name, paused))

    async def set_schedule_paused_async(self, name: str, paused: bool) -> bool:
        return await self._arun(self._schedule_paused_op(name, paused))

    def _run_now_op(self, name: str) -> _Op[int | None]:
        return _Op(self.sql.run_schedule_now, {"name": name},
                   lambda rows: int(rows[0][0]) if rows else None, retry_safe=False)

    def run_schedule_now(self, name: str) -> int | None:
        return self._run(self._run_now_op(name))

    async def run_schedule_now_async(self, name: str) -> int | None:
        return await self._arun(self._run_now_op(name))

    async def acquire_lease(self, name: str, *, holder: str, ttl_s: float) -> bool:
        return bool(await self._arun(_Op(self.sql.acquire_lease, {
            "name": name, "holder": holder, "ttl": ttl_s}, lambda rows: bool(rows))))

    async def release_lease(self, name: str, *, holder: str) -> None:
        await self._arun(_Op(self.sql.release_lease, {"name": name, "holder": holder}, _none))

    async def drop_history(self, *, older_than_s: float) -> int:
        return int(await self._arun(_Op(self.sql.drop_history_older, {"keep": older_than_s},
                                        _scalar)) or 0)

    def listener(self, callback: WakeCallback) -> PgListener | None:
        """The worker's LISTEN connection (a service), calling ``callback`` for each wake-up;
        None behind a transaction pooler without ``listen_url`` (the worker polls)."""
        url = self.listen_url
        if url is None:
            if self.pooler == "transaction":
                return None  # the worker polls (see pooler)
            url = self.dsn
        return PgListener(url, self.sql, callback, connect_timeout=self._connect_timeout,
                          check_pooler=self.pooler != "session")

    # ---- queue control -------------------------------------------------------------------
    def _paused_op(self, queue: str, paused: bool) -> _Op[None]:
        return _Op(self.sql.set_paused, {"queue": queue, "paused": paused}, _none)

    def set_paused(self, queue: str, paused: bool) -> None:
        self._run(self._paused_op(queue, paused))

    async def set_paused_async(self, queue: str, paused: bool) -> None:
        await self._arun(self._paused_op(queue, paused))

    def _paused_queues_op(self) -> _Op[set[str]]:
        return _Op(self.sql.paused_queues, {}, lambda rows: {r[0] for r in rows})

    def paused_queues(self) -> set[str]:
        return self._run(self._paused_queues_op())

    async def paused_queues_async(self) -> set[str]:
        return await self._arun(self._paused_queues_op())

    def _forget_op(self, queue: str) -> _Op[bool]:
        return _Op(self.sql.forget_queue, {"queue": queue}, lambda rows: bool(rows))

    def forget_queue(self, queue: str) -> bool:
        return self._run(self._forget_op(queue))

    async def forget_queue_async(self, queue: str) -> bool:
        return await self._arun(self._forget_op(queue))

    def _count_op(self, queue: str) -> _Op[int]:
        return _Op(self.sql.count, {"queue": queue}, lambda rows: int(rows[0][0]))

    def count(self, queue: str) -> int:
        return self._run(self._count_op(queue))

    async def count_async(self, queue: str) -> int:
        return await self._arun(self._count_op(queue))

    def _sizes_op(self, queue: str) -> _Op[dict[str, int]]:
        def read(rows: list[Row]) -> dict[str, int]:
            w, s, r, f = rows[0]
            return {"waiting": w, "scheduled": s, "running": r, "failed": f}
        return _Op(self.sql.sizes, {"queue": queue}, read)

    def sizes(self, queue: str) -> dict[str, int]:
        return self._run(self._sizes_op(queue))

    async def sizes_async(self, queue: str) -> dict[str, int]:
        return await self._arun(self._sizes_op(queue))

    def _clear_op(self, queue: str) -> _Op[int]:
        return _Op(self.sql.clear, {"queue": queue}, _count)

    def clear(self, queue: str) -> int:
        return self._run(self._clear_op(queue))

    async def clear_async(self, queue: str) -> int:
        return await self._arun(self._clear_op(queue))

    def _advance_op(self, by_s: float | None, queues: Sequence[str],
                    kind: str) -> _Op[int]:
        # "all the way" is ten thousand years: past any storable run_at, and no overflow
        by = dt.timedelta(days=3_652_500) if by_s is None else dt.timedelta(
            seconds=min(by_s, 315_576_000_000.0))
        return _Op(self.sql.advance_waiting, {"by": by, "queues": list(queues), "kind": kind},
                   _count)

    def advance_waiting(self, by_s: float | None, queues: Sequence[str],
                        kind: str = "all") -> int:
        """Time travel for tests (:mod:`pgqueue.testing`): bring the future waiting jobs of
        ``queues`` forward by ``by_s`` seconds (None: make them all due now), never earlier than
        now. ``kind``: ``"scheduled"`` (never attempted nor snoozed), ``"retries"`` (waiting
        after a failed attempt or a snooze) or ``"all"``. Returns how many moved."""
        return self._run(self._advance_op(by_s, queues, kind))

    async def advance_waiting_async(self, by_s: float | None, queues: Sequence[str],
                                    kind: str = "all") -> int:
        """Async twin of :meth:`advance_waiting`."""
        return await self._arun(self._advance_op(by_s, queues, kind))

    def _pop_op(self, queue: str) -> _Op[Job | None]:
        return _Op(self.sql.pop, {"queue": queue}, lambda rows: _job(rows[0]) if rows else None,
                   json_as_text=True)

    def pop(self, queue: str) -> Job | None:
        return self._run(self._pop_op(queue))

    async def pop_async(self, queue: str) -> Job | None:
        return await self._arun(self._pop_op(queue))

    def _cancel_plan(self, job_id: int) -> _Plan[bool]:
        def steps() -> Generator[_Step, Any, bool]:
            if (yield _Op(self.sql.cancel_waiting, {"id": job_id}, _ids)):
                yield from self._release_steps([job_id], ["cancelled"], [None])
                return True
            return bool((yield _Op(self.sql.cancel_running, {"id": job_id}, _ids)))
        return _Plan(steps, atomic=True)

    def cancel(self, job_id: int) -> bool:
        return self._run(self._cancel_plan(job_id))

    async def cancel_async(self, job_id: int) -> bool:
        return await self._arun(self._cancel_plan(job_id))

    def _get_job_op(self, job_id: int) -> _Op[Job | None]:
        return _Op(self.sql.get_job, {"id": job_id},
                   lambda rows: _job(rows[0]) if rows else None, json_as_text=True)

    def get_job(self, job_id: int) -> Job | None:
        return self._run(self._get_job_op(job_id))

    async def get_job_async(self, job_id: int) -> Job | None:
        return await self._arun(self._get_job_op(job_id))

    def _list_failed_op(self, queue: str | None, limit: int) -> _Op[list[FailedJob]]:
        return _Op(self.sql.list_failed, {"queue": queue, "limit": limit},
                   lambda rows: [_failed(r) for r in rows], json_as_text=True)

    def list_failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        return self._run(self._list_failed_op(queue, limit))

    async def list_failed_async(self, queue: str | None = None,
                                limit: int = 100) -> list[FailedJob]:
        return await self._arun(self._list_failed_op(queue, limit))

    def _get_failed_op(self, job_id: int) -> _Op[FailedJob | None]:
        return _Op(self.sql.get_failed, {"id": job_id},
                   lambda rows: _failed(rows[0]) if rows else None, json_as_text=True)

    def get_failed(self, job_id: int) -> FailedJob | None:
        return self._run(self._get_failed_op(job_id))

    async def get_failed_async(self, job_id: int) -> FailedJob | None:
        return await self._arun(self._get_failed_op(job_id))

    def _get_finished_op(self, job_id: int) -> _Op[FinishedJob | None]:
        return _Op(self.sql.get_finished, {"id": job_id},
                   lambda rows: _finished(rows[0]) if rows else None, json_as_text=True)

    def get_finished(self, job_id: int) -> FinishedJob | None:
        return self._run(self._get_finished_op(job_id))

    async def get_finished_async(self, job_id: int) -> FinishedJob | None:
        return await self._arun(self._get_finished_op(job_id))

    def _redrive_op(self, ids: Sequence[int] | None, queue: str | None) -> _Op[list[int]]:
        return _Op(self.sql.redrive, {"ids": None if ids is None else list(ids),
                                      "queue": queue}, _ids)

    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]:
        with _redrive_errors():
            return self._run(self._redrive_op(ids, queue))

    async def redrive_async(self, ids: Sequence[int] | None = None,
                            queue: str | None = None) -> list[int]:
        with _redrive_errors():
            return await self._arun(self._redrive_op(ids, queue))

    def _purge_op(self, queue: str | None, before: dt.datetime | None,
                  ids: Sequence[int] | None, task: str | None, *, count: bool = False) -> _Op[int]:
        params = {"queue": queue, "before": before, "task": task,
                  "ids": None if ids is None else list(ids)}
        return _Op(self.sql.count_failed if count else self.sql.purge_failed, params, _count)

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        return self._run(self._purge_op(queue, before, ids, task))

    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int:
        return await self._arun(self._purge_op(queue, before, ids, task))

    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        return self._run(self._purge_op(queue, before, ids, task, count=True))

    async def count_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None, *,
                                 ids: Sequence[int] | None = None,
                                 task: str | None = None) -> int:
        return await self._arun(self._purge_op(queue, before, ids, task, count=True))

    def _stats_op(self) -> _Op[list[QueueStats]]:
        return _Op(self.sql.queue_stats, {}, lambda rows: [
            QueueStats(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                       concurrency=r[10], key_concurrency=r[11], rate_limit=r[12],
                       rate_period_s=r[13], slots_in_use=r[14], rate_used=int(r[15] or 0),
                       waiting_for_limit=int(r[16] or 0), key_rate_limit=r[17],
                       key_rate_period_s=r[18]) for r in rows])

    def stats(self) -> list[QueueStats]:
        return self._run(_without_jit(self._stats_op()))

    def live_worker_queues(self, *, max_age_s: float = 60.0) -> set[str]:
        """The queues that workers with a heartbeat in the last ``max_age_s`` seconds serve
        (``pgqueue status --check``)."""
        return self._run(_Op(self.sql.live_worker_queues, {"max_age": max_age_s},
                             lambda rows: {str(r[0]) for r in rows}))

    async def stats_async(self) -> list[QueueStats]:
        return await self._arun(_without_jit(self._stats_op()))

    async def inspect_async(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run the dashboard's read statement ``name`` (one of
        :data:`pgqueue.drivers.postgres.sql.DASHBOARD_READS`) with ``params``; the rows as
        tuples, ``jsonb`` columns as their JSON text. The inspection surface of
        :mod:`pgqueue.dashboard` (plain reads: nothing is locked or written)."""
        query = dashboard_statements(self.schema).get(name)
        return await self._arun(_without_jit(_Op(query, params, list, json_as_text=True)))


def _claim_settings() -> dict[str, str]:
    """What the limited claim's transaction sets for itself first (``SET LOCAL``: gone at its
    commit, so nothing stays on a server session that a pooler then lends to another client;
    pipelined with the rest, so no extra round trip). The unlimited claim, one autocommit
    statement, sets ``synchronous_commit`` inside the statement (see ``claim_rows`` in
    :mod:`~pgqueue.drivers.postgres.sql`).

    - ``synchronous_commit = off``: a claim commits without waiting for the WAL flush. Safe
      because a lost claim only un-claims: if the server crashes before the claim's commit
      reaches disk, the job is ``waiting`` again after recovery and runs again -- which is what
      a crash of the worker would have caused anyway (execution is at-least-once).
      Completions, archives and enqueues stay fully durable.
    - ``jit = off``: a claim is a few index probes; JIT compilation (triggered by the cost
      estimates of the limited claim's CTEs) would cost far more than it saves.
    """
    return {"synchronous_commit": "off", "jit": "off"}


#: What the capped claim's transaction sets besides :func:`_claim_settings`: the server runs
#: the prepared ``claim_capped`` with its generic plan rather than planning it again for every
#: claim (a custom plan took longer to make than to run: 0.5 ms of planning for 0.5 ms of
#: execution on a 5,000-job backlog). Its plan does not depend on the values: index lookups
#: by the queue's name and the job ids, and a LIMIT known only when it runs, either way. The
#: keyed and rate-limited claim keeps custom plans (its estimates do depend on the values).
_CAPPED_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


async def _claim_setup(conn: psycopg.AsyncConnection[Any]) -> None:
    """A new connection of the claim pool: READ COMMITTED, which psycopg states in each
    ``BEGIN`` (not a session setting): the limited claim's proof needs a fresh snapshot per
    statement (see ``claim_limited``). The pipelined claim of one limited queue sends its own
    ``BEGIN`` (:data:`~pgqueue.drivers.postgres.sql.BEGIN_READ_COMMITTED`), which says so too."""
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)


#: id(statement) -> (the statement, its bytes): psycopg renders a ``sql.Composed`` to bytes on
#: every execute (a walk over its parts, each encoded); pgqueue's statements are fixed per
#: schema (:func:`~pgqueue.drivers.postgres.sql.statements` is cached), so each is rendered once
_RENDERED: dict[int, tuple[sql.Composed, bytes]] = {}


def _rendered(query: sql.Composed, context: Any) -> bytes | sql.Composed:
    """``query`` as the bytes psycopg would send (rendered once). Only ASCII renderings are
    kept, as they read the same in every client encoding; others go to psycopg as they are."""
    hit = _RENDERED.get(id(query))
    if hit is not None and hit[0] is query:
        return hit[1]
    data = query.as_bytes(context)
    if not data.isascii():
        return query
    _RENDERED[id(query)] = (query, data)
    return data


def _step(cur: psycopg.Cursor[Row], step: _Step) -> Any:
    """Run one plan step on a cursor (sync)."""
    if isinstance(step, _Copy):
        with cur.copy(step.query) as cp:
            for chunk in step.data:
                cp.write(chunk)
        return None
    if step.json_as_text:
        with cur.connection.cursor(row_factory=tuple_row) as text_cur:
            text_cur.adapters.register_loader("jsonb", _JsonText)
            text_cur.execute(_rendered(step.query, cur), step.params)
            return step.read(text_cur.fetchall() if _has_rows(text_cur) else [])
    cur.execute(_rendered(step.query, cur), step.params)
    return step.read(cur.fetchall() if _has_rows(cur) else [])


async def _astep(cur: psycopg.AsyncCursor[Row], step: _Step) -> Any:
    """Async twin of :func:`_step`."""
    if isinstance(step, _Copy):
        async with cur.copy(step.query) as cp:
            for chunk in step.data:
                await cp.write(chunk)
        return None
    if step.json_as_text:
        async with cur.connection.cursor(row_factory=tuple_row) as text_cur:
            text_cur.adapters.register_loader("jsonb", _JsonText)
            await text_cur.execute(_rendered(step.query, cur), step.params)
            return step.read(await text_cur.fetchall() if _has_rows(text_cur) else [])
    await cur.execute(_rendered(step.query, cur), step.params)
    return step.read(await cur.fetchall() if _has_rows(cur) else [])


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (what ``cur.description is not None`` says, without
    building the columns' descriptions on every statement)."""
    result = cur.pgresult
    return result is not None and result.status == _TUPLES_OK


_TUPLES_OK = pq.ExecStatus.TUPLES_OK


# ---- one job: App.enqueue's path ------------------------------------------------------------
# The plan executors' generality (a generator of steps, a context manager per call, the rows'
# column descriptions) cost as much client CPU as psycopg's own work for the one INSERT that
# enqueueing one job is; these two run it directly (a second statement only when the job's
# unique key is held). Their cursor is not closed: a client-side cursor holds no server
# resource (closing it only drops its rows, as the garbage collector does at return), and the
# ``async with`` cost 1.5% of an async enqueue's instructions.
def _insert_one_params(j: NewJob) -> dict[str, Any]:
    """The parameters of :attr:`Statements.insert_one` for ``j``."""
    return {"queue": j.queue, "task": j.task, "args": j.args_json, "priority": j.priority,
            "max_attempts": j.max_attempts, "run_at": j.run_at, "delay": j.delay_s,
            "unique_key": j.unique_key, "timeout_s": j.timeout_s, "meta": j.meta_json,
            "concurrency_key": j.concurrency_key}


def _insert_one(c: psycopg.Connection[Any], q: Statements, params: dict[str, Any]) -> list[int]:
    """Insert one job on ``c`` (in its transaction, if one is open): ``[its id]``, or the id
    of the live job that holds its unique key."""
    cur = c.cursor(row_factory=tuple_row)
    for _ in range(UNIQUE_INSERT_TRIES):
        row = cur.execute(_rendered(q.insert_one, cur), params).fetchone()
        if row is None:  # the unique key is held: return the holder's id
            row = cur.execute(_rendered(q.id_by_unique_key, cur),
                              {"unique_key": params["unique_key"]}).fetchone()
        if row is not None:
            return [int(row[0])]
        # the holder finished between the two statements: the key is free again
    raise _unique_key_churn(params["unique_key"])


async def _ainsert_one(c: psycopg.AsyncConnection[Any], q: Statements,
                       params: dict[str, Any]) -> list[int]:
    """Async twin of :func:`_insert_one`."""
    cur = c.cursor(row_factory=tuple_row)
    for _ in range(UNIQUE_INSERT_TRIES):
        row = await (await cur.execute(_rendered(q.insert_one, cur), params)).fetchone()
        if row is None:  # the unique key is held: return the holder's id
            row = await (await cur.execute(_rendered(q.id_by_unique_key, cur),
                                           {"unique_key": params["unique_key"]})).fetchone()
        if row is not None:
            return [int(row[0])]
    raise _unique_key_churn(params["unique_key"])


def _unique_key_churn(key: str) -> TransientDatabaseError:
    """The job holding ``key`` kept finishing between the insert and the look-up of its id (or
    the caller's snapshot cannot see the holder: a REPEATABLE READ transaction)."""
    return TransientDatabaseError(
        f"could not enqueue with unique key {key!r}: the job holding it finished while this "
        f"enqueue looked for it, {UNIQUE_INSERT_TRIES} times; retry the enqueue (in a new "
        "transaction if yours is REPEATABLE READ or SERIALIZABLE)")


def _never_ran(exc: psycopg.Error) -> bool:
    """Whether the server ended the session before running our statement: it closed the
    connection for sitting idle (``idle_session_timeout``)."""
    return exc.sqlstate == _IDLE_SESSION_TIMEOUT


@contextmanager
def _redrive_errors() -> Iterator[None]:
    """A unique-key conflict on re-drive is the caller's :class:`pgqueue.JobError`."""
    try:
        yield
    except DatabaseError as e:
        if isinstance(e.__cause__, pgerrors.UniqueViolation):
            raise JobError("cannot re-drive: a live job already holds the same unique_key; "
                           "cancel or finish it first") from e.__cause__
        raise
