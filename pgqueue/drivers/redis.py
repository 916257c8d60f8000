"""The Redis driver: a thin layer over Redis sorted sets, hashes and Lua scripts.

Needs the ``redis`` extra (``pip install 'pgqueue[redis]'``) and Redis >= 5.0 (single node or
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

Every state change is one Lua script (atomic on the server) and uses the server's clock
(``TIME``), so all processes agree on run times and leases. Semantics follow the PostgreSQL
driver: claim in ``(priority, run_at, id)`` order over unpaused queues with ``attempt + 1`` and a
lease; finish/requeue/archive only for jobs running under the given worker (and, when given,
at the claimed attempt, so a stale outcome never lands on a later claim); rescue of expired
leases requeues the job, or archives it with reason ``"worker died while running"`` on its last
attempt, so a worker killed mid-job (SIGKILL, OOM, lost host) loses no job; redrive keeps the
id and resets ``attempt`` to 0; unique keys are honoured like the ``jobs_unique_key_idx`` index.

Limits, declared in :attr:`RedisDriver.capabilities`:

- ``transactional_enqueue=False`` and ``transactional_completion=False``: Redis cannot join
  your database transaction; ``conn=`` raises :class:`pgqueue.CapabilityError`. An enqueue after
  your commit can still be lost if the process dies in between (use the postgres driver for
  that guarantee). Batches are atomic per chunk of 1,000 jobs.
- history keeps only the last ``history_limit`` finished jobs (default 10,000), read with
  :meth:`RedisDriver.history`; there is no SQL over it.
- Redis Cluster is not supported: the scripts compute key names at run time. A prefix with a
  hash tag (``"{pgqueue}"``) keeps every key in one slot, but this is not tested.
- durability is Redis's: without AOF (``appendonly yes``) a Redis restart loses recent jobs.
- ``QueueStats.finished_last_hour``/``mean_run_time_s`` are computed over the capped history.

Async methods run the blocking redis-py client in a thread (``asyncio.to_thread``), so the
worker's event loop never waits on the network; the wake-up listener uses ``redis.asyncio``
pub/sub on the worker's own loop. Redis errors are translated at this boundary: unreachable
server -> :class:`pgqueue.DatabaseUnavailableError`, bad URL -> :class:`pgqueue.ConfigurationError`
(key ``"redis url"``), anything else -> :class:`pgqueue.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from pgqueue._defaults import DEFAULT_REDIS_URL
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
)
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DriverError,
    JobError,
    PgQueueError,
)
from pgqueue.job import Job, NewJob

if TYPE_CHECKING:
    import redis as redis_mod
    import redis.asyncio as aioredis

__all__ = ["RedisDriver", "RedisListener"]

log = logging.getLogger("pgqueue.redis")

T = TypeVar("T")

#: Reason and error text of a job whose lease expired on its last attempt.
WORKER_DIED = "worker died while running"
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
                          "pip install 'pgqueue[redis]'") from exc
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
    return Job(id=int(h["id"]), queue=h["queue"], task=h["task"], args=json.loads(h["args"]),
               priority=int(h["priority"]), attempt=int(h["attempt"]),
               max_attempts=int(h["max_attempts"]), run_at=_ms_to_dt(h["run_at"]),
               created_at=_ms_to_dt(h["created_at"]), unique_key=h.get("unique_key"),
               timeout_s=float(h["timeout_s"]) if "timeout_s" in h else None,
               errors=json.loads(h["errors"]), meta=json.loads(h["meta"]), state=h["state"])


def _failed(h: dict[str, str]) -> FailedJob:
    return FailedJob(id=int(h["id"]), queue=h["queue"], task=h["task"],
                     args=json.loads(h["args"]), priority=int(h["priority"]),
                     attempt=int(h["attempt"]), max_attempts=int(h["max_attempts"]),
                     errors=json.loads(h["errors"]), reason=h["reason"],
                     enqueued_at=_ms_to_dt(h["created_at"]), failed_at=_ms_to_dt(h["failed_at"]))


def _finished(text: str) -> FinishedJob:
    h: dict[str, str] = json.loads(text)
    return FinishedJob(id=int(h["id"]), queue=h["queue"], task=h["task"],
                       args=json.loads(h["args"]), priority=int(h["priority"]),
                       state=h["final_state"], attempt=int(h["attempt"]),
                       max_attempts=int(h["max_attempts"]), errors=json.loads(h["errors"]),
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


# ---- Lua ------------------------------------------------------------------------------------
# ARGV[1] is always the key prefix. Numbers written to Redis go through num() ('%.0f'): Lua's
# default number formatting would use an exponent for 16-digit scores.
_PRELUDE = r"""
local P = ARGV[1]
local PRIO = 4398046511104
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(n) return string.format('%.0f', n) end
local function jkey(m) return P .. ':job:' .. m end
local function qkey(q, kind) return P .. ':q:' .. q .. ':' .. kind end
local function wkey(w) return P .. ':w:' .. w end
local function append_error(errors, err)
  if not errors or errors == '' or errors == '[]' then return '[' .. err .. ']' end
  return string.sub(errors, 1, -2) .. ',' .. err .. ']'
end
local function add_waiting(m, q, prio, run_at, now)
  if run_at <= now then
    redis.call('ZADD', qkey(q, 'ready'), num(prio * PRIO + run_at), m)
  else
    redis.call('ZADD', qkey(q, 'delayed'), num(run_at), m)
  end
end
local function promote(q, now)
  local due = redis.call('ZRANGEBYSCORE', qkey(q, 'delayed'), '-inf', num(now))
  for _, m in ipairs(due) do
    local h = redis.call('HMGET', jkey(m), 'priority', 'run_at')
    if h[1] then
      redis.call('ZADD', qkey(q, 'ready'), num(tonumber(h[1]) * PRIO + tonumber(h[2])), m)
    end
  end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', qkey(q, 'delayed'), '-inf', num(now)) end
end
local function leave_running(m, q, w)
  redis.call('ZREM', P .. ':running', m)
  redis.call('SREM', qkey(q, 'active'), m)
  if w then redis.call('SREM', wkey(w), m) end
end
local function release_unique(m, uk)
  if uk and uk ~= '' and redis.call('HGET', P .. ':unique', uk) == m then
    redis.call('HDEL', P .. ':unique', uk)
  end
end
local function to_history(m, state, result, now, limit)
  local flat = redis.call('HGETALL', jkey(m))
  local rec = {}
  for i = 1, #flat, 2 do rec[flat[i]] = flat[i + 1] end
  rec['id'] = m
  rec['final_state'] = state
  if result and result ~= '' then rec['result'] = result end
  rec['finished_at'] = num(now)
  redis.call('LPUSH', P .. ':history', cjson.encode(rec))
  redis.call('LTRIM', P .. ':history', 0, limit - 1)
end
local function archive(m, q, w, uk, errors, err, reason, last, now)
  leave_running(m, q, w)
  redis.call('SREM', P .. ':cancel', m)
  release_unique(m, uk)
  redis.call('HSET', jkey(m), 'state', 'failed', 'errors', append_error(errors, err),
             'reason', reason, 'failed_at', num(now))
  if last and last ~= '' then redis.call('HSET', jkey(m), 'last_error', last) end
  redis.call('HDEL', jkey(m), 'worker_id', 'cancel_requested')
  redis.call('ZADD', P .. ':failed', num(now), m)
  redis.call('ZADD', qkey(q, 'failed'), num(now), m)
end
local function held(h_state, h_worker, h_attempt, w, a)
  return h_state == 'running' and h_worker == w
    and (a == nil or a == '' or tonumber(h_attempt) == tonumber(a))
end
local function flat_job(m)
  local flat = redis.call('HGETALL', jkey(m))
  flat[#flat + 1] = 'id'
  flat[#flat + 1] = m
  return flat
end
"""

#: ARGV: prefix, n, then n x (queue, task, args, priority, max_attempts, run_at_ms|'',
#: delay_ms|'', unique_key|'', timeout_s|'', meta). Returns ids in input order (the holder's id
#: for a unique key already held by a live job). Wakes the queues' workers.
_INSERT = _PRELUDE + r"""
local now = now_ms()
local n = tonumber(ARGV[2])
local ids, seen, queues = {}, {}, {}
for i = 0, n - 1 do
  local b = 3 + i * 10
  local q, uk = ARGV[b], ARGV[b + 7]
  local held = false
  if uk ~= '' then held = redis.call('HGET', P .. ':unique', uk) end
  if held then
    ids[#ids + 1] = tonumber(held)
  else
    local id = redis.call('INCR', P .. ':seq')
    local m = string.format('%016d', id)
    local run_at
    if ARGV[b + 5] ~= '' then run_at = tonumber(ARGV[b + 5])
    else run_at = now + math.floor(tonumber(ARGV[b + 6])) end
    redis.call('HSET', jkey(m), 'queue', q, 'task', ARGV[b + 1], 'args', ARGV[b + 2],
               'priority', ARGV[b + 3], 'attempt', '0', 'max_attempts', ARGV[b + 4],
               'run_at', num(run_at), 'created_at', num(now), 'meta', ARGV[b + 9],
               'errors', '[]', 'state', 'waiting')
    if uk ~= '' then
      redis.call('HSET', jkey(m), 'unique_key', uk)
      redis.call('HSET', P .. ':unique', uk, m)
    end
    if ARGV[b + 8] ~= '' then redis.call('HSET', jkey(m), 'timeout_s', ARGV[b + 8]) end
    add_waiting(m, q, tonumber(ARGV[b + 3]), run_at, now)
    ids[#ids + 1] = id
    if not seen[q] then seen[q] = true; queues[#queues + 1] = q end
  end
end
for _, q in ipairs(queues) do
  redis.call('SADD', P .. ':queues', q)
  redis.call('PUBLISH', P .. ':jobs', q)
end
return ids
"""

#: ARGV: prefix, worker, lease_ms, limit, nq, queues... Claims the best ``limit`` ready jobs
#: over the unpaused queues; returns them as flat field lists.
_CLAIM = _PRELUDE + r"""
local now = now_ms()
local w, lease, limit, nq = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cands = {}
for i = 1, nq do
  local q = ARGV[5 + i]
  if redis.call('SISMEMBER', P .. ':paused', q) == 0 then
    promote(q, now)
    local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, limit - 1, 'WITHSCORES')
    for j = 1, #top, 2 do cands[#cands + 1] = {tonumber(top[j + 1]), top[j], q} end
  end
end
if nq > 1 then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local out = {}
for i = 1, math.min(limit, #cands) do
  local m, q = cands[i][2], cands[i][3]
  redis.call('ZREM', qkey(q, 'ready'), m)
  redis.call('HINCRBY', jkey(m), 'attempt', 1)
  redis.call('HSET', jkey(m), 'state', 'running', 'worker_id', w, 'started_at', num(now))
  redis.call('ZADD', P .. ':running', num(now + lease), m)
  redis.call('SADD', qkey(q, 'active'), m)
  redis.call('SADD', wkey(w), m)
  out[#out + 1] = flat_job(m)
end
return out
"""

#: ARGV: prefix, worker, history_limit, n, then n x (member, state, result|'', attempt|'').
#: Moves running jobs of the worker (at the given attempt, if any) to history; returns their ids.
_FINISH = _PRELUDE + r"""
local now = now_ms()
local w, limit, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 4
  local m, state, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'attempt')
  if held(h[1], h[2], h[5], w, ARGV[b + 3]) then
    to_history(m, state, result, now, limit)
    leave_running(m, h[3], w)
    redis.call('SREM', P .. ':cancel', m)
    release_unique(m, h[4])
    redis.call('DEL', jkey(m))
    out[#out + 1] = tonumber(m)
  end
end
return out
"""

#: ARGV: prefix, worker, n, then n x (member, delay_ms, count_attempt '1'|'0', error|'',
#: last_error|'', attempt|''). Puts running jobs of the worker (at the given attempt, if any)
#: back to waiting; returns their ids.
_REQUEUE = _PRELUDE + r"""
local now = now_ms()
local w, n = ARGV[2], tonumber(ARGV[3])
local out, seen, queues = {}, {}, {}
for i = 0, n - 1 do
  local b = 4 + i * 6
  local m = ARGV[b]
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'priority', 'errors',
                       'attempt')
  if held(h[1], h[2], h[6], w, ARGV[b + 5]) then
    local q = h[3]
    leave_running(m, q, w)
    local run_at = now + math.floor(tonumber(ARGV[b + 1]))
    redis.call('HSET', jkey(m), 'state', 'waiting', 'run_at', num(run_at))
    redis.call('HDEL', jkey(m), 'worker_id')
    if ARGV[b + 2] == '0' then redis.call('HINCRBY', jkey(m), 'attempt', -1) end
    if ARGV[b + 3] ~= '' then
      redis.call('HSET', jkey(m), 'errors', append_error(h[5], ARGV[b + 3]))
    end
    if ARGV[b + 4] ~= '' then redis.call('HSET', jkey(m), 'last_error', ARGV[b + 4]) end
    add_waiting(m, q, tonumber(h[4]), run_at, now)
    out[#out + 1] = tonumber(m)
    if not seen[q] then seen[q] = true; queues[#queues + 1] = q end
  end
end
for _, q in ipairs(queues) do redis.call('PUBLISH', P .. ':jobs', q) end
return out
"""

#: ARGV: prefix, worker, member, error, reason, last_error, attempt|''. Archives a running job
#: of the worker (at the given attempt, if any); returns 1, or 0 when the worker does not hold
#: it.
_ARCHIVE = _PRELUDE + r"""
local now = now_ms()
local w, m = ARGV[2], ARGV[3]
local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'errors',
                     'attempt')
if not held(h[1], h[2], h[6], w, ARGV[7]) then return 0 end
archive(m, h[3], w, h[4], h[5], ARGV[4], ARGV[5], ARGV[6], now)
return 1
"""

#: ARGV: prefix, limit, iso timestamp. Jobs whose lease expired go back to ready (attempt
#: counted) or, on their last attempt, to the archive. Returns {requeued ids, archived ids}.
_RESCUE = _PRELUDE + r"""
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', '(' .. num(now),
                           'LIMIT', 0, tonumber(ARGV[2]))
local rescued, failed, seen, queues = {}, {}, {}, {}
for _, m in ipairs(expired) do
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'errors',
                       'attempt', 'max_attempts', 'priority')
  if h[1] ~= 'running' then
    redis.call('ZREM', P .. ':running', m)
  else
    local q, w, attempt = h[3], h[2], tonumber(h[6])
    local err = cjson.encode({attempt = attempt, error = 'worker died while running',
                              traceback = cjson.null, at = ARGV[3], worker = w or cjson.null})
    if attempt >= tonumber(h[7]) then
      archive(m, q, w, h[4], h[5], err, 'worker died while running',
              'worker died while running', now)
      failed[#failed + 1] = tonumber(m)
    else
      leave_running(m, q, w)
      redis.call('HSET', jkey(m), 'state', 'waiting', 'run_at', num(now),
                 'errors', append_error(h[5], err), 'last_error', 'worker died while running')
      redis.call('HDEL', jkey(m), 'worker_id')
      add_waiting(m, q, tonumber(h[8]), now, now)
      rescued[#rescued + 1] = tonumber(m)
      if not seen[q] then seen[q] = true; queues[#queues + 1] = q end
    end
  end
end
for _, q in ipairs(queues) do redis.call('PUBLISH', P .. ':jobs', q) end
return {rescued, failed}
"""

#: ARGV: prefix, worker, lease_ms, all '1'|'0', members... Extends the leases of the listed
#: jobs (all the worker's jobs when ``all`` is '1') that run under the worker, and its registry
#: heartbeat. Members of the worker's set that no longer run under it are dropped from the set.
_HEARTBEAT = _PRELUDE + r"""
local now = now_ms()
local w, lease = ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', P .. ':workers:hb', 'XX', num(now), w)
local listed = {}
if ARGV[4] == '1' then
  listed = redis.call('SMEMBERS', wkey(w))
else
  for i = 5, #ARGV do listed[#listed + 1] = ARGV[i] end
end
for _, m in ipairs(listed) do
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id')
  if h[1] == 'running' and h[2] == w then
    redis.call('ZADD', P .. ':running', 'XX', num(now + lease), m)
  else
    redis.call('SREM', wkey(w), m)
  end
end
return 1
"""

#: ARGV: prefix, worker, info JSON.
_REGISTER = _PRELUDE + r"""
redis.call('HSET', P .. ':workers', ARGV[2], ARGV[3])
redis.call('ZADD', P .. ':workers:hb', num(now_ms()), ARGV[2])
return 1
"""

#: ARGV: prefix, older_than_ms. Forgets workers that stopped heartbeating.
_PRUNE = _PRELUDE + r"""
local old = redis.call('ZRANGEBYSCORE', P .. ':workers:hb', '-inf',
                       '(' .. num(now_ms() - tonumber(ARGV[2])))
for _, w in ipairs(old) do
  redis.call('HDEL', P .. ':workers', w)
  redis.call('ZREM', P .. ':workers:hb', w)
end
return #old
"""

#: ARGV: prefix, member, history_limit. A waiting job goes to history as cancelled
#: ('cancelled'); a running job is flagged and its worker told ('requested'); else nil.
_CANCEL = _PRELUDE + r"""
local now = now_ms()
local m = ARGV[2]
local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key')
if h[1] == 'waiting' then
  redis.call('ZREM', qkey(h[3], 'ready'), m)
  redis.call('ZREM', qkey(h[3], 'delayed'), m)
  to_history(m, 'cancelled', '', now, tonumber(ARGV[3]))
  release_unique(m, h[4])
  redis.call('SREM', P .. ':cancel', m)
  redis.call('DEL', jkey(m))
  return 'cancelled'
elseif h[1] == 'running' then
  redis.call('HSET', jkey(m), 'cancel_requested', '1')
  redis.call('SADD', P .. ':cancel', m)
  redis.call('PUBLISH', P .. ':ctl', cjson.encode({op = 'cancel', id = tonumber(m),
                                                   worker = h[2] or cjson.null}))
  return 'requested'
end
return false
"""

#: ARGV: prefix, queue. Removes the next ready job (paused or not) and returns it.
_POP = _PRELUDE + r"""
local now = now_ms()
local q = ARGV[2]
promote(q, now)
local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, 0)
if #top == 0 then return false end
local m = top[1]
redis.call('ZREM', qkey(q, 'ready'), m)
local flat = flat_job(m)
release_unique(m, redis.call('HGET', jkey(m), 'unique_key'))
redis.call('SREM', P .. ':cancel', m)
redis.call('DEL', jkey(m))
return flat
"""

#: ARGV: prefix, queue, chunk. Deletes up to 2 x chunk waiting jobs; returns how many.
_CLEAR = _PRELUDE + r"""
local q, chunk = ARGV[2], tonumber(ARGV[3])
local n = 0
for _, kind in ipairs({'ready', 'delayed'}) do
  local ms = redis.call('ZRANGE', qkey(q, kind), 0, chunk - 1)
  for _, m in ipairs(ms) do
    release_unique(m, redis.call('HGET', jkey(m), 'unique_key'))
    redis.call('SREM', P .. ':cancel', m)
    redis.call('DEL', jkey(m))
    redis.call('ZREM', qkey(q, kind), m)
    n = n + 1
  end
end
return n
"""

#: ARGV: prefix, n, members... Re-drives archived jobs (all or nothing on unique conflicts).
_REDRIVE = _PRELUDE + r"""
local now = now_ms()
local n = tonumber(ARGV[2])
local keys = {}
for i = 1, n do
  local m = ARGV[2 + i]
  local h = redis.call('HMGET', jkey(m), 'state', 'unique_key')
  if h[1] == 'failed' and h[2] then
    if keys[h[2]] or redis.call('HEXISTS', P .. ':unique', h[2]) == 1 then
      return redis.error_reply('PGQUEUE_UNIQUE job ' .. tonumber(m))
    end
    keys[h[2]] = true
  end
end
local out, seen, queues = {}, {}, {}
for i = 1, n do
  local m = ARGV[2 + i]
  local h = redis.call('HMGET', jkey(m), 'state', 'queue', 'priority', 'errors', 'unique_key')
  if h[1] == 'failed' then
    local q = h[2]
    redis.call('HDEL', jkey(m), 'reason', 'failed_at', 'worker_id', 'started_at',
               'cancel_requested', 'last_error')
    redis.call('HSET', jkey(m), 'state', 'waiting', 'attempt', '0', 'run_at', num(now))
    local ok, errs = pcall(cjson.decode, h[4] or '[]')
    if ok and type(errs) == 'table' and #errs > 0 and type(errs[#errs]) == 'table' then
      local last = errs[#errs]['error']
      if type(last) == 'string' or type(last) == 'number' then
        redis.call('HSET', jkey(m), 'last_error', tostring(last))
      end
    end
    redis.call('ZREM', P .. ':failed', m)
    redis.call('ZREM', qkey(q, 'failed'), m)
    if h[5] then redis.call('HSET', P .. ':unique', h[5], m) end
    add_waiting(m, q, tonumber(h[3]), now, now)
    out[#out + 1] = tonumber(m)
    if not seen[q] then seen[q] = true; queues[#queues + 1] = q end
  end
end
for _, q in ipairs(queues) do redis.call('PUBLISH', P .. ':jobs', q) end
return out
"""

#: ARGV: prefix, queue|'', before_ms|'', chunk. Deletes up to chunk archived jobs.
_PURGE = _PRELUDE + r"""
local key = P .. ':failed'
if ARGV[2] ~= '' then key = qkey(ARGV[2], 'failed') end
local max = '+inf'
if ARGV[3] ~= '' then max = '(' .. ARGV[3] end
local ms = redis.call('ZRANGEBYSCORE', key, '-inf', max, 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(ms) do
  local q = redis.call('HGET', jkey(m), 'queue')
  redis.call('DEL', jkey(m))
  redis.call('ZREM', P .. ':failed', m)
  if q then redis.call('ZREM', qkey(q, 'failed'), m) end
  redis.call('ZREM', key, m)
end
return #ms
"""

#: ARGV: prefix, queue. {waiting (ready now), scheduled, running, failed}.
_SIZES = _PRELUDE + r"""
local now, q = now_ms(), ARGV[2]
local due = redis.call('ZCOUNT', qkey(q, 'delayed'), '-inf', num(now))
return {redis.call('ZCARD', qkey(q, 'ready')) + due,
        redis.call('ZCOUNT', qkey(q, 'delayed'), '(' .. num(now), '+inf'),
        redis.call('SCARD', qkey(q, 'active')), redis.call('ZCARD', qkey(q, 'failed'))}
"""

#: ARGV: prefix, nq, queues... The run_at (ms) of the next job in claim order over the unpaused
#: queues (a time not after now when jobs are ready), else nil.
_NEXT_RUN_AT = _PRELUDE + r"""
local best = false
for i = 1, tonumber(ARGV[2]) do
  local q = ARGV[2 + i]
  if redis.call('SISMEMBER', P .. ':paused', q) == 0 then
    local r = redis.call('ZRANGE', qkey(q, 'ready'), 0, 0)
    if r[1] then
      local v = tonumber(redis.call('HGET', jkey(r[1]), 'run_at'))
      if v and (not best or v < best) then best = v end
    end
    local d = redis.call('ZRANGE', qkey(q, 'delayed'), 0, 0, 'WITHSCORES')
    if d[1] then
      local v = tonumber(d[2])
      if not best or v < best then best = v end
    end
  end
end
return best
"""

#: ARGV: prefix. {now_ms, {name, paused, registered, waiting, scheduled, running, failed,
#: failed_last_hour, oldest ready run_at or -1}...}. The oldest ready job is found exactly by
#: looking at the first job of each priority band of the ready set.
_STATS = _PRELUDE + r"""
local now = now_ms()
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local rk = qkey(q, 'ready')
  local oldest = -1
  local top = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  while top[1] do
    local score = tonumber(top[2])
    local band = math.floor(score / PRIO)
    local run_at = score - band * PRIO
    if oldest < 0 or run_at < oldest then oldest = run_at end
    top = redis.call('ZRANGEBYSCORE', rk, num((band + 1) * PRIO), '+inf', 'WITHSCORES',
                     'LIMIT', 0, 1)
  end
  local d = redis.call('ZRANGE', qkey(q, 'delayed'), 0, 0, 'WITHSCORES')
  if d[1] and tonumber(d[2]) <= now and (oldest < 0 or tonumber(d[2]) < oldest) then
    oldest = tonumber(d[2])
  end
  local due = redis.call('ZCOUNT', qkey(q, 'delayed'), '-inf', num(now))
  out[#out + 1] = {q, redis.call('SISMEMBER', P .. ':paused', q),
                   redis.call('SISMEMBER', P .. ':registered', q),
                   redis.call('ZCARD', rk) + due,
                   redis.call('ZCOUNT', qkey(q, 'delayed'), '(' .. num(now), '+inf'),
                   redis.call('SCARD', qkey(q, 'active')),
                   redis.call('ZCARD', qkey(q, 'failed')),
                   redis.call('ZCOUNT', qkey(q, 'failed'), '(' .. num(now - 3600000), '+inf'),
                   num(oldest)}
end
return {num(now), out}
"""

_SCRIPTS = {
    "insert": _INSERT, "claim": _CLAIM, "finish": _FINISH, "requeue": _REQUEUE,
    "archive": _ARCHIVE, "rescue": _RESCUE, "heartbeat": _HEARTBEAT, "register": _REGISTER,
    "prune": _PRUNE, "cancel": _CANCEL, "pop": _POP, "clear": _CLEAR, "redrive": _REDRIVE,
    "purge": _PURGE, "sizes": _SIZES, "next_run_at": _NEXT_RUN_AT, "stats": _STATS,
}


class RedisListener:
    """Subscribes to the driver's pub/sub channels and hands wake-ups to the worker's callback.

    Runs on the worker's event loop (``redis.asyncio``). On a connection error it reconnects
    with exponential backoff and reports ``("reconnected", None)`` so the worker re-checks for
    work it may have missed. Pub/sub is a hint: the worker's polling covers lost messages.

    Stopping does not rely on task cancellation alone: redis-py's pub/sub read can swallow a
    ``CancelledError`` (its reconnect logic catches it), so the loop also checks a stop flag
    after every read, which returns at least every ``read_timeout`` seconds.
    """

    def __init__(self, url: str, prefix: str, callback: WakeCallback, *,
                 connect_timeout: float = 5.0, health_interval: float = 5.0,
                 read_timeout: float = 0.5) -> None:
        self._url = url
        self._jobs_channel = f"{prefix}:jobs"
        self._ctl_channel = f"{prefix}:ctl"
        self._callback = callback
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._read_timeout = read_timeout
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="pgqueue-redis-listener")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=self._read_timeout + 5.0)
            if not done:  # pragma: no cover - the flag ends the loop within read_timeout
                log.warning("redis listener did not stop in time; abandoning it")
            elif not task.cancelled() and task.exception() is not None:
                log.debug("redis listener ended with %r", task.exception())
        self.connected.clear()

    async def _run(self) -> None:
        import redis.asyncio as aioredis

        first = True
        delay = 0.1
        while not self._stopping:
            client: aioredis.Redis | None = None
            try:
                client = aioredis.Redis.from_url(
                    self._url, decode_responses=True,
                    socket_connect_timeout=self._connect_timeout,
                    health_check_interval=self._health_interval)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(self._jobs_channel, self._ctl_channel)
                    self.connected.set()
                    if not first:
                        self.reconnects += 1
                        log.info("redis listener reconnected",
                                 extra={"event": "listener_reconnected"})
                        self._callback("reconnected", None)
                    first = False
                    delay = 0.1
                    while not self._stopping:
                        msg = await pubsub.get_message(timeout=self._read_timeout)
                        if msg is not None and not self._stopping:
                            self._dispatch(str(msg["channel"]), str(msg["data"]))
                finally:
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("redis listener connection lost: %s; reconnecting in %.1f s", exc,
                            delay, extra={"event": "listener_lost"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    def _dispatch(self, channel: str, data: str) -> None:
        if channel == self._jobs_channel:
            self._callback("job", data)
        elif channel == self._ctl_channel:
            try:
                self._callback("control", json.loads(data))
            except ValueError:
                log.warning("ignoring malformed control message %r", data)


class RedisDriver(NoDatabaseMixin):
    """Redis driver (see the module docstring for the data model, semantics and limits).

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
            ``unix:///path/to/redis.sock?db=0``.
        prefix: the first part of every key and channel name; use one prefix per application
            (or per test) to keep queues apart on a shared Redis.
        history_limit: finished jobs kept in the history list (newest first).
        connect_timeout / socket_timeout: seconds, for connecting and for each command.
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
                 history_limit: int = 10_000, connect_timeout: float = 5.0,
                 socket_timeout: float = 30.0) -> None:
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
                         for name, src in _SCRIPTS.items()}

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

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
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
        """Insert jobs (atomically per chunk of 1,000); ids in input order. A job whose
        ``unique_key`` is held by a live job is not inserted; that job's id is returned."""
        if conn is not None:
            raise CapabilityError("the redis driver cannot enqueue inside your transaction "
                                  "(conn=...); drop conn= or use the postgres driver")
        ids: list[int] = []
        for start in range(0, len(jobs), INSERT_CHUNK):
            chunk = jobs[start:start + INSERT_CHUNK]
            args: list[Any] = [len(chunk)]
            for j in chunk:
                args += [j.queue, j.task, j.args_json, j.priority, j.max_attempts,
                         "" if j.run_at is None else _dt_to_ms(j.run_at),
                         "" if j.run_at is not None else repr(max(0.0, j.delay_s or 0.0) * 1000),
                         j.unique_key or "", "" if j.timeout_s is None else repr(j.timeout_s),
                         j.meta_json]
            ids += [int(i) for i in self._script("insert", *args)]
        return ids

    async def insert_many_async(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        if conn is not None:
            return self.insert_many(jobs, conn=conn)  # raises CapabilityError
        return await self._thread(self.insert_many, jobs)

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
        return await self._thread(self._claim, queues, limit, worker_id, lease_s)

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
        return await self._thread(self._finish, items, worker_id)

    def _requeue(self, items: Sequence[Requeue], worker_id: str) -> list[int]:
        args: list[Any] = [worker_id, len(items)]
        for i in items:
            err = "" if i.error is None else json.dumps(i.error, default=str)
            last = "" if i.error is None or i.error.get("error") is None else str(i.error["error"])
            args += [_m(i.job_id), repr(max(0.0, i.delay_s) * 1000),
                     "1" if i.count_attempt else "0", err, last, _attempt(i.attempt)]
        return [int(x) for x in self._script("requeue", *args)]

    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]:
        """Put running jobs of ``worker_id`` (at each item's claimed ``attempt``, if given) back
        to waiting after their delay; returns their ids."""
        if not items:
            return []
        return await self._thread(self._requeue, items, worker_id)

    def _archive(self, job_id: int, worker_id: str, error: dict[str, Any], reason: str,
                 attempt: int | None) -> bool:
        last = "" if error.get("error") is None else str(error["error"])
        return bool(self._script("archive", worker_id, _m(job_id),
                                 json.dumps(error, default=str), reason, last,
                                 _attempt(attempt)))

    async def archive(self, job_id: int, *, worker_id: str, error: dict[str, Any],
                      reason: str, attempt: int | None = None) -> bool:
        """Move a running job of ``worker_id`` (at the claimed ``attempt``, if given) to the
        failed archive with ``error`` appended."""
        return await self._thread(self._archive, job_id, worker_id, error, reason, attempt)

    def _next_run_at(self, queues: Sequence[str]) -> dt.datetime | None:
        names = list(dict.fromkeys(queues))
        value = self._script("next_run_at", len(names), *names)
        return None if value is None else _ms_to_dt(value)

    async def next_run_at(self, queues: Sequence[str]) -> dt.datetime | None:
        """When the next waiting job of the unpaused ``queues`` is due (a time not after now
        when jobs are ready); None when no job waits."""
        return await self._thread(self._next_run_at, queues)

    async def now(self) -> dt.datetime:
        """The Redis server's clock (the one run times and leases use)."""
        secs, micros = await self._thread(self._do, lambda c: c.time())
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
        await self._thread(self._register, worker_id, queues, concurrency)

    def _unregister(self, worker_id: str) -> None:
        def run(c: redis_mod.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.hdel(self.key("workers"), worker_id)
            pipe.zrem(self.key("workers:hb"), worker_id)
            pipe.execute()
        self._do(run)

    async def unregister_worker(self, *, worker_id: str) -> None:
        await self._thread(self._unregister, worker_id)

    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int] | None = None) -> None:
        """Extend the leases of the listed jobs that ``worker_id`` runs (every job it runs when
        ``job_ids`` is None), and its registry heartbeat. A job the worker does not know it
        holds (a claim whose answer was lost) is not extended, so it expires and is rescued."""
        members = [] if job_ids is None else [_m(i) for i in job_ids]
        await self._thread(self._script, "heartbeat", worker_id, max(1, int(lease_s * 1000)),
                           "1" if job_ids is None else "0", *members)

    def _rescue(self, limit: int) -> tuple[list[int], list[int]]:
        rescued, failed = self._script("rescue", limit, dt.datetime.now(dt.UTC).isoformat())
        return [int(x) for x in rescued], [int(x) for x in failed]

    async def rescue_expired(self, *, limit: int = 1000) -> tuple[list[int], list[int]]:
        """Requeue (counting the attempt) or archive, on their last attempt, the running jobs
        whose lease expired; returns (requeued ids, archived ids)."""
        return await self._thread(self._rescue, limit)

    def _cancel_requested(self, worker_id: str) -> list[int]:
        members: set[str] = self._do(
            lambda c: c.sinter([self.key("w", worker_id), self.key("cancel")]))  # type: ignore[arg-type,return-value]
        return sorted(int(m) for m in members)

    async def cancel_requested(self, *, worker_id: str) -> list[int]:
        return await self._thread(self._cancel_requested, worker_id)

    async def prune_workers(self, *, older_than_s: float) -> None:
        await self._thread(self._script, "prune", int(older_than_s * 1000))

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

    async def set_paused_async(self, queue: str, paused: bool) -> None:
        await self._thread(self.set_paused, queue, paused)

    def paused_queues(self) -> set[str]:
        members: set[str] = self._do(lambda c: c.smembers(self.key("paused")))  # type: ignore[arg-type,return-value]
        return set(members)

    async def paused_queues_async(self) -> set[str]:
        return await self._thread(self.paused_queues)

    def count(self, queue: str) -> int:
        """Waiting (including scheduled) + running jobs of ``queue``."""
        def run(c: redis_mod.Redis) -> int:
            pipe = c.pipeline(transaction=True)
            pipe.zcard(self.key("q", queue, "ready"))
            pipe.zcard(self.key("q", queue, "delayed"))
            pipe.scard(self.key("q", queue, "active"))
            return sum(int(x) for x in pipe.execute())
        return self._do(run)

    async def count_async(self, queue: str) -> int:
        return await self._thread(self.count, queue)

    def sizes(self, queue: str) -> dict[str, int]:
        """``waiting`` (ready now), ``scheduled`` (run_at ahead), ``running`` and ``failed``."""
        w, s, r, f = self._script("sizes", queue)
        return {"waiting": int(w), "scheduled": int(s), "running": int(r), "failed": int(f)}

    async def sizes_async(self, queue: str) -> dict[str, int]:
        return await self._thread(self.sizes, queue)

    def clear(self, queue: str) -> int:
        """Delete the waiting and scheduled jobs of ``queue``; running jobs finish normally."""
        total = 0
        while True:
            n = int(self._script("clear", queue, DELETE_CHUNK))
            total += n
            if n == 0:
                return total

    async def clear_async(self, queue: str) -> int:
        return await self._thread(self.clear, queue)

    def pop(self, queue: str) -> Job | None:
        """Remove the next ready job of ``queue`` (paused or not) and return it: the caller owns
        it now. It does not go to history."""
        flat = self._script("pop", queue)
        return None if flat is None else _job(_pairs(flat))

    async def pop_async(self, queue: str) -> Job | None:
        return await self._thread(self.pop, queue)

    def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job (to history as ``cancelled``) or flag a running one (its worker
        is told); False when no live job has that id."""
        return self._script("cancel", _m(job_id), self.history_limit) is not None

    async def cancel_async(self, job_id: int) -> bool:
        return await self._thread(self.cancel, job_id)

    def get_job(self, job_id: int) -> Job | None:
        """A live (waiting or running) job, or None."""
        h: dict[str, str] = self._do(lambda c: c.hgetall(self.key("job", _m(job_id))))  # type: ignore[arg-type,return-value]
        if h.get("state") not in ("waiting", "running"):
            return None
        h["id"] = str(job_id)
        return _job(h)

    async def get_job_async(self, job_id: int) -> Job | None:
        return await self._thread(self.get_job, job_id)

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

    async def list_failed_async(self, queue: str | None = None,
                                limit: int = 100) -> list[FailedJob]:
        return await self._thread(self.list_failed, queue, limit)

    def get_failed(self, job_id: int) -> FailedJob | None:
        rows = self._failed_rows([_m(job_id)])
        return rows[0] if rows else None

    async def get_failed_async(self, job_id: int) -> FailedJob | None:
        return await self._thread(self.get_failed, job_id)

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

    async def redrive_async(self, ids: Sequence[int] | None = None,
                            queue: str | None = None) -> list[int]:
        return await self._thread(self.redrive, ids, queue)

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None) -> int:
        """Delete archived jobs (of ``queue``, failed before ``before``); returns how many."""
        cutoff = "" if before is None else str(_dt_to_ms(before))
        total = 0
        while True:
            n = int(self._script("purge", queue or "", cutoff, DELETE_CHUNK))
            total += n
            if n < DELETE_CHUNK:
                return total

    async def purge_failed_async(self, queue: str | None = None,
                                 before: dt.datetime | None = None) -> int:
        return await self._thread(self.purge_failed, queue, before)

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

    async def history_async(self, queue: str | None = None,
                            limit: int = 100) -> list[FinishedJob]:
        return await self._thread(self.history, queue, limit)

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
            runs = [(f.finished_at - f.started_at).total_seconds()
                    for f in done if f.started_at is not None]
            oldest_ms = int(oldest)
            out.append(QueueStats(
                queue=name, paused=bool(int(paused)), waiting=int(waiting),
                scheduled=int(scheduled), running=int(running), failed=int(failed),
                finished_last_hour=len(done), failed_last_hour=int(failed_hour),
                oldest_wait_s=max(0.0, (now - oldest_ms) / 1000) if oldest_ms >= 0 else None,
                mean_run_time_s=sum(runs) / len(runs) if runs else None))
        return sorted(out, key=lambda s: s.queue)

    async def stats_async(self) -> list[QueueStats]:
        return await self._thread(self.stats)
