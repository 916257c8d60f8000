"""The Redis driver: a thin layer over Redis sorted sets, hashes and Lua scripts.

Needs the ``redis`` extra (``pip install 'pgqueue-tx[redis]'``) and Redis >= 5.0 (single node or
Sentinel; see "Limits" for Redis Cluster).

Data model (every key starts with ``<prefix>:``; ``<m>`` is a job id zero-padded to 16 digits so
that equal scores sort by id)::

    seq                     INCR counter of job ids
    job:<m>                 HASH: one job, live (waiting/running) or archived (failed)
    q:<queue>:ready         ZSET of ready jobs, score priority * 2**42 + run_at (ms): claim order
                            (priority, run_at, id) is the set's own order
    q:<queue>:delayed       ZSET of jobs whose run_at is ahead, score run_at (ms); due jobs are
                            moved to ``ready`` by the claim/pop scripts
    q:<queue>:active        SET of running job ids of the queue
    q:<queue>:failed        ZSET of archived jobs of the queue, score failed_at (ms)
    running                 ZSET of running job ids, score lease expiry (ms): the processing set
    w:<worker>              SET of the job ids a worker runs (heartbeat, cancel requests)
    cancel                  SET of running job ids asked to stop
    failed                  ZSET of every archived job id, score failed_at (ms)
    unique                  HASH unique_key -> id of the live job holding it
    history                 LIST of finished jobs as JSON, newest first, capped
    paused / registered / queues   SETs: paused queues / queues ever paused or resumed /
                            queues ever used
    workers / workers:hb    HASH worker -> JSON info / ZSET worker -> last heartbeat (ms)
    jobs / ctl              pub/sub channels: queue name on new work; JSON control messages

Every state change is one Lua script (atomic on the server) and uses the server's clock (``TIME``),
so all processes agree on run times and leases. Semantics follow the PostgreSQL driver: claim in
``(priority, run_at, id)`` order over unpaused queues with ``attempt + 1`` and a lease;
finish/requeue/archive only for jobs running under the given worker (and, when given, at the claimed
attempt, so a stale outcome never lands on a later claim); rescue of expired leases requeues the
job, or quarantines it to the archive when its worker died holding it too often
(:func:`pgqueue.job.rescue_quarantines`), with the reasons it is given, so a worker killed
mid-job (SIGKILL, OOM, lost host) loses no job; redrive keeps the id and resets ``attempt`` to 0;
unique keys are honoured like the ``jobs_unique_key_idx`` index.

Limits, declared in :attr:`RedisDriver.capabilities`:

- ``transactional_enqueue=False`` and ``transactional_completion=False``: Redis cannot join
  your database transaction; :class:`pgqueue.App` refuses ``conn=`` with
  :class:`pgqueue.CapabilityError`. An enqueue after
  your commit can still be lost if the process dies in between (use the postgres driver for
  that guarantee). A batch is inserted whole or not at all (one ``MULTI``/``EXEC``).
- history keeps only the last ``history_limit`` finished jobs (default 10,000), read with
  :meth:`RedisDriver.history`; there is no SQL over it.
- Redis Cluster is not supported: the scripts compute key names at run time. A prefix with a
  hash tag (``"{pgqueue}"``) keeps every key in one slot, but this is not tested.
- durability is Redis's: without AOF (``appendonly yes``) a Redis restart loses recent jobs.
- ``QueueStats.finished_last_hour``/``mean_run_time_s`` are computed over the capped history.

Async methods run the blocking redis-py client in a thread (``asyncio.to_thread``), so the
worker's event loop never waits on the network: the queue-control twins are generated from the
sync forms (:func:`~pgqueue.drivers.base.async_twin`). The wake-up listener
(:mod:`pgqueue.drivers.redis.listener`) uses ``redis.asyncio`` pub/sub on the worker's own loop.
The Lua scripts are files of this package (``scripts/*.lua``).

Redis errors are translated at this boundary: unreachable server ->
:class:`pgqueue.DatabaseUnavailableError`, bad URL -> :class:`pgqueue.ConfigurationError` (key
``"redis url"``), anything else -> :class:`pgqueue.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from pgqueue._defaults import DEFAULT_REDIS_TIMEOUT, DEFAULT_REDIS_URL
from pgqueue._dsn import check_redis_url
from pgqueue._dsn import redact as _safe_url
from pgqueue.drivers.base import (
    Capabilities,
    FailedJob,
    Finish,
    FinishedJob,
    NoDatabaseMixin,
    QueueStats,
    Requeue,
    WakeCallback,
    async_twin,
    mean_run_time,
)
from pgqueue.drivers.redis.listener import RedisListener
from pgqueue.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DriverError,
    JobError,
    PgQueueError,
)
from pgqueue.job import (
    QUARANTINE_AFTER,
    QUARANTINE_REASON,
    RESCUE_REASON,
    RESCUE_SPREAD_S,
    AttemptError,
    Job,
    NewJob,
    attempt_errors,
    decode_stored,
)

if TYPE_CHECKING:
    import redis as redis_mod

__all__ = ["RedisDriver", "RedisListener"]

T = TypeVar("T")

#: Jobs per insert script call (each call is atomic).
INSERT_CHUNK = 1000
#: Jobs deleted per clear/purge script call (keeps each call short on the server).
DELETE_CHUNK = 1000
_UNIQUE_ERROR = "PGQUEUE_UNIQUE"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:{}\-/]{1,100}")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DriverError("the redis driver needs the redis package: "
                          "pip install 'pgqueue-tx[redis]'") from exc
    return redis


def _m(job_id: int) -> str:
    """A job id as a set member (zero-padded so that ties sort by id)."""
    return f"{job_id:016d}"


def _attempt(attempt: int | None) -> str:
    """A claimed attempt as a script argument ('' when it is not to be checked)."""
    return "" if attempt is None else str(int(attempt))


def _ms_to_dt(value: str | int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(float(value)) / 1000, dt.UTC)


def _dt_to_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _job(h: dict[str, str]) -> Job:
    # args and meta decoded job by job: one that cannot be decoded (written around pgqueue's
    # validation) is archived by the worker, alone, instead of failing the whole claim
    args, bad_args = decode_stored(h["args"], "args")
    meta, bad_meta = decode_stored(h["meta"], "meta")
    return Job(id=int(h["id"]), queue=h["queue"], task=h["task"], args=args,
               priority=int(h["priority"]), attempt=int(h["attempt"]),
               max_attempts=int(h["max_attempts"]), run_at=_ms_to_dt(h["run_at"]),
               created_at=_ms_to_dt(h["created_at"]), unique_key=h.get("unique_key"),
               timeout_s=float(h["timeout_s"]) if "timeout_s" in h else None,
               errors=attempt_errors(json.loads(h["errors"])), meta=meta,
               state=h["state"], decode_error=bad_args or bad_meta,
               snoozes=int(h.get("snoozes", 0)))


def _failed(h: dict[str, str]) -> FailedJob:
    return FailedJob(id=int(h["id"]), queue=h["queue"], task=h["task"],
                     args=decode_stored(h["args"])[0], priority=int(h["priority"]),
                     attempt=int(h["attempt"]), max_attempts=int(h["max_attempts"]),
                     errors=attempt_errors(json.loads(h["errors"])), reason=h["reason"],
                     enqueued_at=_ms_to_dt(h["created_at"]), failed_at=_ms_to_dt(h["failed_at"]))


def _finished(text: str) -> FinishedJob:
    h: dict[str, str] = json.loads(text)
    return FinishedJob(id=int(h["id"]), queue=h["queue"], task=h["task"],
                       args=json.loads(h["args"]), priority=int(h["priority"]),
                       state=h["final_state"], attempt=int(h["attempt"]),
                       max_attempts=int(h["max_attempts"]),
                       errors=attempt_errors(json.loads(h["errors"])),
                       result=json.loads(h["result"]) if "result" in h else None,
                       worker_id=h.get("worker_id"), enqueued_at=_ms_to_dt(h["created_at"]),
                       started_at=_ms_to_dt(h["started_at"]) if "started_at" in h else None,
                       finished_at=_ms_to_dt(h["finished_at"]))


_URL_HELP = ("use redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or "
             "unix:///path/to/redis.sock?db=0")


def _check_url(url: object) -> None:
    """Reject what redis-py would accept silently (a non-numeric db becomes db 0)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"empty Redis URL; {_URL_HELP}", key="redis url")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {_safe_url(url)!r} ({exc}); {_URL_HELP}",
                                 key="redis url") from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"invalid Redis URL {_safe_url(url)!r}: unknown scheme "
                                 f"{parts.scheme!r}; {_URL_HELP}", key="redis url")
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    query_db = [v for k, v in (p.partition("=")[::2] for p in parts.query.split("&") if p)
                if k == "db"]
    for value in ([db] if db else []) + query_db:
        if not value.isdigit():
            raise ConfigurationError(f"invalid Redis URL {_safe_url(url)!r}: database "
                                     f"{value!r} is not a number; {_URL_HELP}",
                                     key="redis url")
    check_redis_url(url, key="redis url", source="argument")  # host, port, socket path


# ---- Lua ------------------------------------------------------------------------------------
#: The scripts, by name: ``scripts/<name>.lua`` in this package, each run after
#: ``scripts/prelude.lua`` (every state change is one script; each file's header gives its ARGV).
SCRIPT_NAMES = ("insert", "claim", "finish", "requeue", "archive", "rescue", "heartbeat",
                "register", "prune", "cancel", "pop", "clear", "redrive", "purge", "purge_ids",
                "sizes", "next_run_at", "stats")


def _load_scripts() -> dict[str, str]:
    """The scripts' source (prelude + script), read from the package's files."""
    folder = resources.files(__package__).joinpath("scripts")
    prelude = folder.joinpath("prelude.lua").read_text(encoding="utf-8")
    return {name: prelude + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
            for name in SCRIPT_NAMES}


class RedisDriver(NoDatabaseMixin):
    """Redis driver (see the module docstring for the data model, semantics and limits).

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
            ``unix:///path/to/redis.sock?db=0``.
        prefix: the first part of every key and channel name; use one prefix per application
            (or per test) to keep queues apart on a shared Redis.
        history_limit: finished jobs kept in the history list (newest first).
        connect_timeout: seconds to wait for a connection (default 5).
        socket_timeout: seconds Redis may take to answer one command (default 5, the
            ``redis_timeout`` setting, ``PGQUEUE_REDIS_TIMEOUT``): a Redis that accepts
            connections but never answers fails the call with
            :class:`pgqueue.DatabaseUnavailableError` after this long instead of stalling it.
            Keep it above your slowest command (a bulk enqueue of many thousand jobs).

    Example::

        RedisDriver("redis://:secret@cache:6379/2", prefix="shop", socket_timeout=2.0)
    """

    name = "redis"
    capabilities = Capabilities(
        transactional_enqueue=False,
        transactional_completion=False,
        cross_process=True,
        push_wakeups=True,
        history=True,
        priorities=True,
        delays=True,
    )

    def __init__(self, url: str = DEFAULT_REDIS_URL, *, prefix: str = "pgqueue",
                 history_limit: int = 10_000, connect_timeout: float = DEFAULT_REDIS_TIMEOUT,
                 socket_timeout: float = DEFAULT_REDIS_TIMEOUT) -> None:
        redis = _import_redis()
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ConfigurationError(f"invalid prefix {prefix!r}: use 1-100 characters from "
                                     "letters, digits and '_ . : - / { }'", key="redis prefix")
        if history_limit < 1:
            raise ConfigurationError("history_limit must be >= 1", key="redis history_limit")
        _check_url(url)
        self.url = url
        self.prefix = prefix
        self.history_limit = history_limit
        self._safe_url = _safe_url(url)
        self._connect_timeout = connect_timeout
        self._exc = redis.exceptions
        try:
            self._client: redis_mod.Redis = redis.Redis.from_url(
                url, decode_responses=True, socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout, health_check_interval=30)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {self._safe_url!r} ({exc}); {_URL_HELP}",
                                     key="redis url") from exc
        self._scripts = {name: self._client.register_script(src)
                         for name, src in _load_scripts().items()}

    def __repr__(self) -> str:
        return f"<pgqueue.RedisDriver {self._safe_url} prefix={self.prefix!r}>"

    def key(self, *parts: str) -> str:
        """A key name under this driver's prefix (``key("q", "emails", "ready")``)."""
        return ":".join((self.prefix, *parts))

    # ---- plumbing ------------------------------------------------------------------------
    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Map redis-py errors to pgqueue's hierarchy at the driver boundary."""
        exc_mod = self._exc
        try:
            yield
        except PgQueueError:
            raise
        except (exc_mod.ConnectionError, exc_mod.TimeoutError) as e:
            raise DatabaseUnavailableError(
                f"Redis at {self._safe_url} did not answer ({e}); check the redis url "
                "(QUEUE_REDIS_* / the driver's url) and that the server is running") from e
        except exc_mod.ResponseError as e:
            if str(e).startswith(_UNIQUE_ERROR):
                raise JobError("cannot re-drive: a live job already holds the same unique_key; "
                               "cancel or finish it first") from e
            raise DatabaseError(f"redis error: {e}") from e
        except exc_mod.RedisError as e:
            raise DatabaseError(f"redis error: {e}") from e

    def _script(self, name: str, *args: Any) -> Any:
        with self._translate():
            return self._scripts[name](args=[self.prefix, *args])

    def _do(self, fn: Callable[[redis_mod.Redis], T]) -> T:
        with self._translate():
            return fn(self._client)

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking client code in a thread (so do the generated async twins)."""
        return await asyncio.to_thread(fn, *args)

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool (jobs stay in Redis)."""
        self._client.close()

    async def aclose(self) -> None:
        self.close()

    def check(self) -> None:
        """Ping the server and check its version (>= 5.0); raise a clear error otherwise."""
        info: dict[str, Any] = self._do(lambda c: c.info("server"))
        version = str(info.get("redis_version", "0"))
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        if major < 5:
            raise DriverError(f"Redis {version} at {self._safe_url} is too old; the redis "
                              "driver needs Redis >= 5.0")

    # ---- enqueue -------------------------------------------------------------------------
    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        """Insert jobs, all or nothing; ids in input order. A job whose ``unique_key`` is held
        by a live job is not inserted; that job's id is returned. (``conn`` is never given:
        :class:`pgqueue.App` refuses it for this driver.)

        Every row is prepared before anything is sent, and the chunks of 1,000 jobs (one script
        call each) go in one ``MULTI``/``EXEC`` transaction: applied together, never
        interleaved with another client, and nothing is written if the connection is lost
        before ``EXEC``."""
        if not jobs:
            return []
        calls: list[list[Any]] = []
        for start in range(0, len(jobs), INSERT_CHUNK):
            chunk = jobs[start:start + INSERT_CHUNK]
            args: list[Any] = [self.prefix, len(chunk)]
            for j in chunk:
                args += [j.queue, j.task, j.args_json, j.priority, j.max_attempts,
                         "" if j.run_at is None else _dt_to_ms(j.run_at),
                         "" if j.run_at is not None else repr(max(0.0, j.delay_s or 0.0) * 1000),
                         j.unique_key or "", "" if j.timeout_s is None else repr(j.timeout_s),
                         j.meta_json]
            calls.append(args)

        def run(c: redis_mod.Redis) -> list[Any]:
            if len(calls) == 1:  # one script call is atomic by itself
                return [self._scripts["insert"](args=calls[0], client=c)]
            pipe = c.pipeline(transaction=True)
            for args in calls:
                self._scripts["insert"](args=args, client=pipe)
            return list(pipe.execute())

        return [int(i) for chunk_ids in self._do(run) for i in chunk_ids]

    insert_many_async = async_twin(insert_many)

    # ---- worker --------------------------------------------------------------------------
    def _claim(self, queues: Sequence[str], limit: int, worker_id: str,
               lease_s: float) -> list[Job]:
        names = list(dict.fromkeys(queues))
        rows = self._script("claim", worker_id, max(1, int(lease_s * 1000)), limit, len(names),
                            *names)
        return [_job(_pairs(r)) for r in rows]

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str,
                    lease_s: float) -> list[Job]:
        """Claim up to ``limit`` ready jobs of the unpaused ``queues`` in
        ``(priority, run_at, id)`` order across all of them."""
        if limit < 1 or not queues:
            return []
        return await self._offload(self._claim, queues, limit, worker_id, lease_s)

    def _finish(self, items: Sequence[Finish], worker_id: str) -> list[int]:
        args: list[Any] = [worker_id, self.history_limit, len(items)]
        for i in items:
            args += [_m(i.job_id), i.state, i.result_json or "", _attempt(i.attempt)]
        return [int(x) for x in self._script("finish", *args)]

    async def finish_many(self, items: Sequence[Finish], *, worker_id: str) -> list[int]:
        """Move running jobs of ``worker_id`` (at each item's claimed ``attempt``, if given) to
        history; returns the ids that were moved."""
        if not items:
            return []
        return await self._offload(self._finish, items, worker_id)

    def _requeue(self, items: Sequence[Requeue], worker_id: str) -> list[int]:
        args: list[Any] = [worker_id, len(items)]
        for i in items:
            err = "" if i.error is None else _error_json(i.error)
            last = "" if i.error is None else i.error.error
            args += [_m(i.job_id), repr(max(0.0, i.delay_s) * 1000),
                     "s" if i.snooze else "1" if i.count_attempt else "0", err, last,
                     _attempt(i.attempt),
                     "" if i.max_attempts is None else str(i.max_attempts)]
        return [int(x) for x in self._script("requeue", *args)]

    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]:
        """Put running jobs of ``worker_id`` (at each item's claimed ``attempt``, if given) back
        to waiting after their delay; returns their ids."""
        if not items:
            return []
        return await self._offload(self._requeue, items, worker_id)

    def _archive(self, job_id: int, worker_id: str, error: AttemptError, reason: str,
                 attempt: int | None) -> bool:
        return bool(self._script("archive", worker_id, _m(job_id), _error_json(error), reason,
                                 error.error, _attempt(attempt)))

    async def archive(self, job_id: int, *, worker_id: str, error: AttemptError,
                      reason: str, attempt: int | None = None) -> bool:
        """Move a running job of ``worker_id`` (at the claimed ``attempt``, if given) to the
        failed archive with ``error`` appended."""
        return await self._offload(self._archive, job_id, worker_id, error, reason, attempt)

    def _next_run_at(self, queues: Sequence[str]) -> dt.datetime | None:
        names = list(dict.fromkeys(queues))
        value = self._script("next_run_at", len(names), *names)
        return None if value is None else _ms_to_dt(value)

    async def next_run_at(self, queues: Sequence[str], *,
                          worker_id: str | None = None) -> dt.datetime | None:
        """When the next waiting job of the unpaused ``queues`` is due (a time not after now
        when jobs are ready); None when no job waits."""
        return await self._offload(self._next_run_at, queues)

    async def now(self) -> dt.datetime:
        """The Redis server's clock (the one run times and leases use)."""
        secs, micros = await self._offload(self._do, lambda c: c.time())
        return dt.datetime.fromtimestamp(int(secs) + int(micros) / 1e6, dt.UTC)

    def _register(self, worker_id: str, queues: Sequence[str], concurrency: int) -> None:
        import os
        import socket

        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "queues": list(queues), "concurrency": concurrency,
                           "started_at": dt.datetime.now(dt.UTC).isoformat()})
        self._script("register", worker_id, info)

    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None:
        await self._offload(self._register, worker_id, queues, concurrency)

    def _unregister(self, worker_id: str) -> None:
        def run(c: redis_mod.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.hdel(self.key("workers"), worker_id)
            pipe.zrem(self.key("workers:hb"), worker_id)
            pipe.execute()
        self._do(run)

    async def unregister_worker(self, *, worker_id: str) -> None:
        await self._offload(self._unregister, worker_id)

    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int] | None = None) -> None:
        """Extend the leases of the listed jobs that ``worker_id`` runs (every job it runs when
        ``job_ids`` is None), and its registry heartbeat. A job the worker does not know it
        holds (a claim whose answer was lost) is not extended, so it expires and is rescued."""
        members = [] if job_ids is None else [_m(i) for i in job_ids]
        await self._offload(self._script, "heartbeat", worker_id, max(1, int(lease_s * 1000)),
                           "1" if job_ids is None else "0", *members)

    def _rescue(self, limit: int, reason: str, quarantine_after: int, quarantine_reason: str,
                spread_s: float) -> tuple[list[int], list[int]]:
        rescued, failed = self._script("rescue", limit, dt.datetime.now(dt.UTC).isoformat(),
                                       reason, max(1, int(quarantine_after)), quarantine_reason,
                                       max(0, int(spread_s * 1000)))
        return [int(x) for x in rescued], [int(x) for x in failed]

    async def rescue_expired(self, *, limit: int = 1000, reason: str = RESCUE_REASON,
                             quarantine_after: int = QUARANTINE_AFTER,
                             quarantine_reason: str = QUARANTINE_REASON,
                             spread_s: float = RESCUE_SPREAD_S) -> tuple[list[int], list[int]]:
        """Rescue the running jobs whose lease expired by the rule of :mod:`pgqueue.job`, in
        one script (see :meth:`pgqueue.drivers.base.Driver.rescue_expired`); returns
        (requeued ids, quarantined ids)."""
        return await self._offload(self._rescue, limit, reason, quarantine_after,
                                   quarantine_reason, spread_s)

    def _cancel_requested(self, worker_id: str) -> list[int]:
        members: set[str] = self._do(
            lambda c: c.sinter([self.key("w", worker_id), self.key("cancel")]))  # type: ignore[arg-type,return-value]
        return sorted(int(m) for m in members)

    async def cancel_requested(self, *, worker_id: str,
                               job_ids: Sequence[int] | None = None) -> list[int]:
        found = await self._offload(self._cancel_requested, worker_id)
        return found if job_ids is None else sorted(set(found).intersection(job_ids))

    async def prune_workers(self, *, older_than_s: float) -> None:
        await self._offload(self._script, "prune", int(older_than_s * 1000))

    def listener(self, callback: WakeCallback) -> RedisListener:
        """A pub/sub listener pushing ``("job", queue)`` and ``("control", {...})`` wake-ups."""
        return RedisListener(self.url, self.prefix, callback,
                             connect_timeout=self._connect_timeout)

    # ---- queue control -------------------------------------------------------------------
    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue; workers see it at their next claim and at once through
        the control channel."""
        def run(c: redis_mod.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            if paused:
                pipe.sadd(self.key("paused"), queue)
            else:
                pipe.srem(self.key("paused"), queue)
            pipe.sadd(self.key("registered"), queue)
            pipe.sadd(self.key("queues"), queue)
            pipe.publish(self.key("ctl"), json.dumps({"op": "pause", "queue": queue,
                                                      "paused": paused}))
            pipe.execute()
        self._do(run)

    set_paused_async = async_twin(set_paused)

    def paused_queues(self) -> set[str]:
        members: set[str] = self._do(lambda c: c.smembers(self.key("paused")))  # type: ignore[arg-type,return-value]
        return set(members)

    paused_queues_async = async_twin(paused_queues)

    def forget_queue(self, queue: str) -> bool:
        """Drop the queue's pause state and listing; jobs stay. True if either was stored."""
        def run(c: redis_mod.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=True)
            pipe.srem(self.key("paused"), queue)
            pipe.srem(self.key("registered"), queue)
            pipe.publish(self.key("ctl"), json.dumps({"op": "pause", "queue": queue,
                                                      "paused": False}))
            return list(pipe.execute())
        paused, registered, _ = self._do(run)
        return bool(int(paused) or int(registered))

    forget_queue_async = async_twin(forget_queue)

    def count(self, queue: str) -> int:
        """Waiting (including scheduled) + running jobs of ``queue``."""
        def run(c: redis_mod.Redis) -> int:
            pipe = c.pipeline(transaction=True)
            pipe.zcard(self.key("q", queue, "ready"))
            pipe.zcard(self.key("q", queue, "delayed"))
            pipe.scard(self.key("q", queue, "active"))
            return sum(int(x) for x in pipe.execute())
        return self._do(run)

    count_async = async_twin(count)

    def sizes(self, queue: str) -> dict[str, int]:
        """``waiting`` (ready now), ``scheduled`` (run_at ahead), ``running`` and ``failed``."""
        w, s, r, f = self._script("sizes", queue)
        return {"waiting": int(w), "scheduled": int(s), "running": int(r), "failed": int(f)}

    sizes_async = async_twin(sizes)

    def clear(self, queue: str) -> int:
        """Delete the waiting and scheduled jobs of ``queue``; running jobs finish normally."""
        total = 0
        while True:
            n = int(self._script("clear", queue, DELETE_CHUNK))
            total += n
            if n == 0:
                return total

    clear_async = async_twin(clear)

    def pop(self, queue: str) -> Job | None:
        """Remove the next ready job of ``queue`` (paused or not) and return it: the caller owns
        it now. It does not go to history."""
        flat = self._script("pop", queue)
        return None if flat is None else _job(_pairs(flat))

    pop_async = async_twin(pop)

    def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job (to history as ``cancelled``) or flag a running one (its worker
        is told); False when no live job has that id."""
        return self._script("cancel", _m(job_id), self.history_limit) is not None

    cancel_async = async_twin(cancel)

    def get_job(self, job_id: int) -> Job | None:
        """A live (waiting or running) job, or None."""
        h: dict[str, str] = self._do(lambda c: c.hgetall(self.key("job", _m(job_id))))  # type: ignore[arg-type,return-value]
        if h.get("state") not in ("waiting", "running"):
            return None
        h["id"] = str(job_id)
        return _job(h)

    get_job_async = async_twin(get_job)

    def _failed_rows(self, members: Sequence[str]) -> list[FailedJob]:
        def run(c: redis_mod.Redis) -> list[dict[str, str]]:
            pipe = c.pipeline(transaction=False)
            for m in members:
                pipe.hgetall(self.key("job", m))
            return list(pipe.execute())
        out = []
        for m, h in zip(members, self._do(run), strict=True):
            if h.get("state") == "failed":
                h["id"] = m
                out.append(_failed(h))
        return out

    def list_failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Archived jobs, newest failure first (ties: highest id first)."""
        if limit < 1:
            return []
        key = self.key("failed") if queue is None else self.key("q", queue, "failed")
        members: list[str] = self._do(lambda c: c.zrevrange(key, 0, limit - 1))  # type: ignore[arg-type,return-value]
        return self._failed_rows(members)

    list_failed_async = async_twin(list_failed)

    def get_failed(self, job_id: int) -> FailedJob | None:
        rows = self._failed_rows([_m(job_id)])
        return rows[0] if rows else None

    get_failed_async = async_twin(get_failed)

    def get_finished(self, job_id: int) -> FinishedJob | None:
        return next((f for f in self.history(limit=self.history_limit) if f.id == job_id), None)

    get_finished_async = async_twin(get_finished)

    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]:
        """Put archived jobs (``ids``, or all of ``queue``, or all) back to waiting with their
        id, ``attempt`` 0 and their errors kept. All or nothing: raises
        :class:`pgqueue.JobError` if a live job already holds one's ``unique_key``."""
        if ids is None:
            key = self.key("failed") if queue is None else self.key("q", queue, "failed")
            members: list[str] = self._do(lambda c: c.zrange(key, 0, -1))  # type: ignore[arg-type,return-value]
        else:
            members = [_m(i) for i in dict.fromkeys(ids)]
            if queue is not None:
                members = [r for r, f in zip(members, self._failed_rows_or_none(members),
                                             strict=True) if f == queue]
        out: list[int] = []
        for start in range(0, len(members), INSERT_CHUNK):
            chunk = members[start:start + INSERT_CHUNK]
            out += [int(x) for x in self._script("redrive", len(chunk), *chunk)]
        return sorted(out)

    def _failed_rows_or_none(self, members: Sequence[str]) -> list[str | None]:
        def run(c: redis_mod.Redis) -> list[str | None]:
            pipe = c.pipeline(transaction=False)
            for m in members:
                pipe.hget(self.key("job", m), "queue")
            return list(pipe.execute())
        return self._do(run)

    redrive_async = async_twin(redrive)

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """Delete archived jobs (``ids``, of ``queue``, of ``task``, failed before ``before``:
        every given filter applies); returns how many."""
        total = 0
        if ids is None and task is None:  # by queue and time only: the script picks them
            cutoff = "" if before is None else str(_dt_to_ms(before))
            while True:
                n = int(self._script("purge", queue or "", cutoff, DELETE_CHUNK))
                total += n
                if n < DELETE_CHUNK:
                    return total
        members = self._failed_members(queue, before, ids, task)
        for start in range(0, len(members), DELETE_CHUNK):
            total += int(self._script("purge_ids", *members[start:start + DELETE_CHUNK]))
        return total

    def _failed_members(self, queue: str | None, before: dt.datetime | None,
                        ids: Sequence[int] | None, task: str | None) -> list[str]:
        """The archived job members matching every given filter (read, not locked)."""
        key = self.key("failed") if queue is None else self.key("q", queue, "failed")
        top = "+inf" if before is None else f"({_dt_to_ms(before)}"
        members: list[str] = self._do(lambda c: c.zrangebyscore(key, "-inf", top))  # type: ignore[arg-type,return-value]
        if ids is not None:
            wanted = {_m(i) for i in ids}
            members = [m for m in members if m in wanted]
        if task is not None and members:
            def run(c: redis_mod.Redis) -> list[str | None]:
                pipe = c.pipeline(transaction=False)
                for m in members:
                    pipe.hget(self.key("job", m), "task")
                return list(pipe.execute())
            members = [m for m, t in zip(members, self._do(run), strict=True) if t == task]
        return members

    purge_failed_async = async_twin(purge_failed)

    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """How many archived jobs match the filters (as for :meth:`purge_failed`)."""
        return len(self._failed_members(queue, before, ids, task))

    count_failed_async = async_twin(count_failed)

    def _history_raw(self) -> list[str]:
        rows: list[str] = self._do(lambda c: c.lrange(self.key("history"), 0, -1))  # type: ignore[arg-type,return-value]
        return rows

    def history(self, queue: str | None = None, limit: int = 100) -> list[FinishedJob]:
        """Finished jobs (succeeded or cancelled), newest first; only the last
        ``history_limit`` are kept."""
        if limit < 1:
            return []
        if queue is None:
            rows: list[str] = self._do(lambda c: c.lrange(self.key("history"), 0, limit - 1))  # type: ignore[arg-type,return-value]
            return [_finished(r) for r in rows]
        out = []
        for r in self._history_raw():
            f = _finished(r)
            if f.queue == queue:
                out.append(f)
                if len(out) >= limit:
                    break
        return out

    history_async = async_twin(history)

    def stats(self) -> list[QueueStats]:
        """Per-queue counts, as the postgres ``queue_stats`` view gives them: queues with live
        or failed jobs, queues ever paused/resumed, and queues with history in the last hour
        (finished counts and mean run time come from the capped history)."""
        now_s, rows = self._script("stats")
        now = int(now_s)
        recent: dict[str, list[FinishedJob]] = {}
        for r in self._history_raw():
            f = _finished(r)
            if _dt_to_ms(f.finished_at) > now - 3_600_000:
                recent.setdefault(f.queue, []).append(f)
        out = []
        for (name, paused, registered, waiting, scheduled, running, failed, failed_hour,
             oldest) in rows:
            done = recent.get(name, [])
            if not (int(registered) or int(waiting) or int(scheduled) or int(running)
                    or int(failed) or done):
                continue
            oldest_ms = int(oldest)
            out.append(QueueStats(
                queue=name, paused=bool(int(paused)), waiting=int(waiting),
                scheduled=int(scheduled), running=int(running), failed=int(failed),
                finished_last_hour=len(done), failed_last_hour=int(failed_hour),
                oldest_wait_s=max(0.0, (now - oldest_ms) / 1000) if oldest_ms >= 0 else None,
                mean_run_time_s=mean_run_time(done)))
        return sorted(out, key=lambda s: s.queue)

    stats_async = async_twin(stats)


def _error_json(error: AttemptError) -> str:
    return json.dumps(error.to_json(), default=str)
