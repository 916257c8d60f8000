"""Every SQL statement pgqueue runs, in one place, with what it locks and why.

Statements are composed once per schema with ``psycopg.sql`` (identifiers are always quoted by
psycopg, never spliced as text) and cached in a :class:`Statements` object. Parameters are bound
by name (``%(name)s``); nothing user-provided is ever formatted into SQL text.

Conventions:

- ``{s}`` below is the schema identifier; ``{chan}`` is the wake-up channel name as a literal.
- A job's ownership is checked on every state change after the claim (``state = 'running' AND
  worker_id = %(worker)s AND attempt = <the claimed attempt>``): a worker whose lease was rescued
  cannot complete or fail a job that another worker (or a later claim of its own) now holds.
"""

from __future__ import annotations

from functools import cache

from psycopg import sql

__all__ = ["JOB_COLUMNS", "Statements", "channel_names", "statements"]

#: Columns returned wherever a :class:`pgqueue.job.Job` is built from a row, in this order.
JOB_COLUMNS = (
    "id", "queue", "task", "args", "priority", "attempt", "max_attempts", "run_at",
    "created_at", "unique_key", "timeout_s", "errors", "meta", "state", "snoozes",
)


def channel_names(schema: str) -> tuple[str, str]:
    """(job wake-up channel, control channel) for a schema: ``<schema>.jobs``, ``<schema>.ctl``."""
    return f"{schema}.jobs", f"{schema}.ctl"


def _cols(prefix: str = "", skip: tuple[str, ...] = ()) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("NULL") if c in skip else sql.SQL(prefix + "{}").format(sql.Identifier(c))
        for c in JOB_COLUMNS
    )


class Statements:
    """The statements for one schema. Build with :func:`statements` (cached)."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        jobs_chan, ctl_chan = channel_names(schema)
        f = {"s": s, "chan": sql.Literal(jobs_chan), "ctl": sql.Literal(ctl_chan),
             "cols": _cols(),
             # a claimed job's past errors are not sent back: the handler does not need them
             # and decoding them for every job costs the worker time
             "claimcols": _cols("j.", skip=("errors",))}

        #: The ownership guard of a single-job outcome (see the module docstring): take job
        #: ``id`` out of ``jobs`` only while it runs under ``worker`` at the claimed ``attempt``.
        f["take_held"] = sql.SQL("""
                DELETE FROM {s}.jobs
                WHERE id = %(id)s AND state = 'running' AND worker_id = %(worker)s
                  AND attempt = coalesce(%(attempt)s::int, attempt)
                RETURNING *""").format(s=s)

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**{k: v for k, v in f.items() if "{" + k + "}" in text})

        self.schema = schema
        self.jobs_channel = jobs_chan
        self.control_channel = ctl_chan

        # ---- enqueue ----------------------------------------------------------------------
        #: Insert one job and wake the workers of its queue at commit. Locks nothing but the new
        #: row (and, with a unique key, waits for a concurrent insert of the same key to finish).
        #: Returns no row when a live job already holds ``unique_key``.
        self.insert_one = q("""
            WITH ins AS (
                INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, run_at,
                                      unique_key, timeout_s, meta)
                VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
                        coalesce(%(run_at)s, now() + make_interval(secs => coalesce(%(delay)s, 0))),
                        %(unique_key)s, %(timeout_s)s, %(meta)s::jsonb)
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id, queue)
            SELECT id, pg_notify({chan}, queue) FROM ins""")

        #: The id of the live job that holds a unique key (after ``insert_one`` returned nothing).
        self.id_by_unique_key = q("""
            SELECT id FROM {s}.jobs WHERE unique_key = %(unique_key)s AND unique_key IS NOT NULL""")

        #: Reserve ``n`` job ids (bulk paths insert with explicit ids so callers get them back
        #: in input order) and read the transaction's clock for delays computed client-side.
        self.reserve_ids = sql.SQL("""
            SELECT now(), array(SELECT nextval(pg_get_serial_sequence({table}, 'id'))
                                  FROM generate_series(1, %(n)s))""").format(
            table=sql.Literal(f"{schema}.jobs"))

        #: Bulk path for small batches and batches with unique keys: one multi-row INSERT from
        #: arrays. Conflicting unique keys are skipped; their rows are not returned.
        self.insert_many = q("""
            INSERT INTO {s}.jobs (id, queue, task, args, priority, max_attempts, run_at,
                                  unique_key, timeout_s, meta)
            SELECT * FROM unnest(%(ids)s::bigint[], %(queues)s::text[], %(tasks)s::text[],
                                 %(args)s::jsonb[], %(priorities)s::smallint[],
                                 %(max_attempts)s::int[], %(run_ats)s::timestamptz[],
                                 %(unique_keys)s::text[], %(timeouts)s::float8[],
                                 %(metas)s::jsonb[])
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id""")

        #: Bulk path for large batches without unique keys.
        self.copy_jobs = q("""
            COPY {s}.jobs (id, queue, task, args, priority, max_attempts, run_at, timeout_s,
                           meta) FROM STDIN""")

        #: One wake-up per queue (not per row), delivered at commit.
        self.notify_queues = q("SELECT pg_notify({chan}, q) FROM unnest(%(queues)s::text[]) q")

        # ---- worker: claim ----------------------------------------------------------------
        #: Both claims end here: the rows locked in the CTE ``c`` become ``running`` under this
        #: worker with ``attempt + 1`` and a lease of ``lease`` seconds.
        claim_rows = """
            UPDATE {s}.jobs j
               SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
                   started_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
              FROM c WHERE j.id = c.id
            RETURNING {claimcols}"""

        #: Claim up to ``limit`` ready jobs of one queue, in (priority, run_at, id) order. The CTE
        #: is the fence: ``FOR UPDATE SKIP LOCKED`` locks exactly the rows this worker takes and
        #: skips rows other workers are claiming; served by the partial index ``jobs_claim_idx``.
        #: A paused queue yields nothing (one lookup in ``queues``, evaluated once).
        self.claim_one_queue = q("""
            WITH c AS (
                SELECT id FROM {s}.jobs
                WHERE state = 'waiting' AND queue = %(queue)s AND run_at <= now()
                  AND NOT EXISTS (SELECT 1 FROM {s}.queues p
                                  WHERE p.name = %(queue)s AND p.paused)
                ORDER BY priority, run_at, id
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED)""" + claim_rows)

        #: The same over several queues: the best ``limit`` jobs of each unpaused queue are
        #: locked through the index (LATERAL, one index scan per queue), then the best ``limit``
        #: overall are taken. Extra rows locked in the CTE are released at commit.
        self.claim_many_queues = q("""
            WITH c AS (
                SELECT cand.id, cand.priority, cand.run_at
                FROM unnest(%(queues)s::text[]) AS qn(name)
                CROSS JOIN LATERAL (
                    SELECT id, priority, run_at FROM {s}.jobs
                    WHERE state = 'waiting' AND queue = qn.name AND run_at <= now()
                      AND NOT EXISTS (SELECT 1 FROM {s}.queues p
                                      WHERE p.name = qn.name AND p.paused)
                    ORDER BY priority, run_at, id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED) cand
                ORDER BY cand.priority, cand.run_at, cand.id
                LIMIT %(limit)s)""" + claim_rows)

        #: When the next waiting job of these queues becomes due (for sleeping until then).
        self.next_run_at = q("""
            SELECT min(run_at) FROM {s}.jobs j
            WHERE state = 'waiting' AND queue = ANY(%(queues)s::text[])
              AND NOT EXISTS (SELECT 1 FROM {s}.queues p WHERE p.name = j.queue AND p.paused)""")

        # ---- worker: outcomes -------------------------------------------------------------
        #: Move finished jobs (succeeded or cancelled) into history in one statement. Rows no
        #: longer owned by this worker (rescued meanwhile) are left alone.
        self.finish_many = q("""
            WITH r AS (
                SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[],
                                     %(results)s::jsonb[]) AS r(id, attempt, state, result)),
            d AS (
                DELETE FROM {s}.jobs j USING r
                WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = r.id
                  AND j.state = 'running' AND j.worker_id = %(worker)s
                  AND j.attempt = coalesce(r.attempt, j.attempt)
                RETURNING j.*, r.state AS final_state, r.result)
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, result, worker_id, enqueued_at,
                                         started_at)
            SELECT id, queue, task, args, priority, final_state, attempt, max_attempts, errors,
                   result, worker_id, created_at, started_at FROM d
            RETURNING id""")

        #: Finish one job inside the caller's transaction (completion joins the handler's
        #: business writes). Same guard as ``finish_many``.
        self.finish_one = q("""
            WITH d AS ({take_held})
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, result, worker_id, enqueued_at,
                                         started_at)
            SELECT id, queue, task, args, priority, %(state)s, attempt, max_attempts, errors,
                   %(result)s::jsonb, worker_id, created_at, started_at FROM d
            RETURNING id""")

        #: Put jobs back to waiting after ``delay`` seconds. ``count_attempt`` false (snooze,
        #: shutdown release) gives the attempt back. ``error`` (jsonb or NULL) is appended to
        #: the job's error list. ``snooze`` true counts a snooze in ``snoozes``; ``max_attempts``
        #: (or NULL) raises the job's cap, never lowers it.
        self.requeue_many = q("""
            WITH r AS (
                SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[],
                                     %(delays)s::float8[], %(count_attempt)s::bool[],
                                     %(errors)s::jsonb[], %(snooze)s::bool[],
                                     %(max_attempts)s::int[])
                    AS r(id, attempt, delay, count_attempt, error, snooze, max_attempts))
            UPDATE {s}.jobs j
               SET state = 'waiting',
                   run_at = now() + make_interval(secs => r.delay),
                   attempt = CASE WHEN r.count_attempt THEN j.attempt ELSE j.attempt - 1 END,
                   snoozes = j.snoozes + r.snooze::int,
                   max_attempts = greatest(j.max_attempts, r.max_attempts),
                   worker_id = NULL, lease_expires_at = NULL,
                   errors = CASE WHEN r.error IS NULL THEN j.errors
                                 ELSE j.errors || jsonb_build_array(r.error) END,
                   last_error = coalesce(r.error ->> 'error', j.last_error)
              FROM r
             WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = r.id AND j.state = 'running'
               AND j.worker_id = %(worker)s AND j.attempt = coalesce(r.attempt, j.attempt)
            RETURNING j.id, pg_notify({chan}, j.queue)""")

        #: Move a job to the archive with its last error, in one statement.
        self.archive = q("""
            WITH d AS ({take_held})
            INSERT INTO {s}.failed_jobs (id, queue, task, args, priority, attempt, max_attempts,
                                         unique_key, timeout_s, meta, errors, reason,
                                         enqueued_at, started_at)
            SELECT id, queue, task, args, priority, attempt, max_attempts, unique_key, timeout_s,
                   meta, errors || jsonb_build_array(%(error)s::jsonb), %(reason)s, created_at,
                   started_at FROM d
            ON CONFLICT (id) DO UPDATE SET
                attempt = excluded.attempt, errors = excluded.errors, reason = excluded.reason,
                started_at = excluded.started_at, failed_at = now()
            RETURNING id""")

        #: Extend the leases of the jobs this worker is really running (and holding results
        #: for), and its registry heartbeat. Only listed ids: a row claimed by a statement whose
        #: answer was lost (connection died) is not extended, so it expires and is rescued.
        self.heartbeat = q("""
            WITH w AS (
                UPDATE {s}.workers SET heartbeat_at = now() WHERE id = %(worker)s RETURNING id),
            h AS (  -- rows a completion is deleting right now are skipped, not waited for
                SELECT id FROM {s}.jobs
                 WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running'
                   AND worker_id = %(worker)s
                   FOR UPDATE SKIP LOCKED)
            UPDATE {s}.jobs j SET lease_expires_at = now() + make_interval(secs => %(lease)s)
              FROM h WHERE j.id = h.id""")

        self.register_worker = q("""
            INSERT INTO {s}.workers (id, host, pid, queues, concurrency)
            VALUES (%(worker)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()""")
        self.unregister_worker = q("DELETE FROM {s}.workers WHERE id = %(worker)s")

        #: Jobs whose lease expired (their worker died or hung) go back to waiting, counting the
        #: attempt, or -- on their last attempt -- to the archive (the rescue rule of
        #: :func:`pgqueue.job.rescue_archives`: a poison job cannot kill workers forever). The error
        #: text and archive reason is the bound ``reason`` (``pgqueue.job.RESCUE_REASON``); the
        #: error record has the stored shape of :class:`pgqueue.job.AttemptError`.
        #: ``FOR UPDATE SKIP LOCKED`` keeps two rescuers off the same job; a live worker's
        #: heartbeat keeps its leases in the future, so its jobs are never rescued.
        self.rescue_expired = q("""
            WITH c AS (
                SELECT id FROM {s}.jobs
                WHERE state = 'running' AND lease_expires_at < now()
                ORDER BY lease_expires_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED),
            dead AS (
                DELETE FROM {s}.jobs j USING c
                WHERE j.id = c.id AND j.attempt >= j.max_attempts
                RETURNING j.*),
            arch AS (
                INSERT INTO {s}.failed_jobs (id, queue, task, args, priority, attempt,
                                             max_attempts, unique_key, timeout_s, meta, errors,
                                             reason, enqueued_at, started_at)
                SELECT id, queue, task, args, priority, attempt, max_attempts, unique_key,
                       timeout_s, meta, errors || jsonb_build_array(jsonb_build_object(
                           'attempt', attempt, 'error', %(reason)s::text,
                           'traceback', NULL, 'at', now(), 'worker', worker_id)),
                       %(reason)s::text, created_at, started_at FROM dead
                ON CONFLICT (id) DO UPDATE SET
                    attempt = excluded.attempt, errors = excluded.errors,
                    reason = excluded.reason, failed_at = now()
                RETURNING id),
            back AS (
                UPDATE {s}.jobs j
                   SET state = 'waiting', worker_id = NULL, lease_expires_at = NULL,
                       run_at = now(),
                       errors = j.errors || jsonb_build_array(jsonb_build_object(
                           'attempt', j.attempt, 'error', %(reason)s::text,
                           'traceback', NULL, 'at', now(), 'worker', j.worker_id)),
                       last_error = %(reason)s::text
                  FROM c WHERE j.id = c.id AND j.attempt < j.max_attempts
                RETURNING j.id, pg_notify({chan}, j.queue))
            SELECT 'rescued', id FROM back UNION ALL SELECT 'failed', id FROM arch""")

        #: Remove registry rows of workers that stopped heartbeating.
        self.prune_workers = q("""
            DELETE FROM {s}.workers
             WHERE heartbeat_at < now() - make_interval(secs => %(older_than)s)""")

        # ---- queue control ----------------------------------------------------------------
        #: Pause or resume a queue; every worker sees it at its next claim, and at once through
        #: the control channel.
        self.set_paused = q("""
            WITH u AS (
                INSERT INTO {s}.queues (name, paused) VALUES (%(queue)s, %(paused)s)
                ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
                RETURNING name)
            SELECT pg_notify({ctl}, json_build_object('op', 'pause', 'queue', %(queue)s,
                                                      'paused', %(paused)s)::text)
              FROM u""")
        self.paused_queues = q("SELECT name FROM {s}.queues WHERE paused")
        #: Forget a queue: delete its row of ``queues`` (its pause state); jobs are untouched.
        #: Locks that row; returns whether it existed (and was paused).
        self.forget_queue = q("""
            WITH d AS (DELETE FROM {s}.queues WHERE name = %(queue)s RETURNING paused)
            SELECT paused, pg_notify({ctl}, json_build_object('op', 'pause', 'queue',
                                                              %(queue)s, 'paused', false)::text)
              FROM d""")

        #: Waiting + running jobs of one queue (backstage's job count).
        self.count = q("SELECT count(*) FROM {s}.jobs WHERE queue = %(queue)s")

        #: Live jobs per state for one queue (waiting, scheduled, running) plus failed.
        self.sizes = q("""
            SELECT
              count(*) FILTER (WHERE state = 'waiting' AND run_at <= now()),
              count(*) FILTER (WHERE state = 'waiting' AND run_at > now()),
              count(*) FILTER (WHERE state = 'running'),
              (SELECT count(*) FROM {s}.failed_jobs WHERE queue = %(queue)s)
            FROM {s}.jobs WHERE queue = %(queue)s""")

        #: Delete the waiting jobs of a queue (running jobs finish normally).
        #: Delete a queue's waiting jobs; returns how many (counted on the server).
        self.clear = q("""
            WITH d AS (
                DELETE FROM {s}.jobs WHERE queue = %(queue)s AND state = 'waiting' RETURNING 1)
            SELECT count(*) FROM d""")

        #: Take the next ready job out of the queue (velocity's ``pop``): the caller owns it.
        self.pop = q("""
            DELETE FROM {s}.jobs WHERE id = (
                SELECT id FROM {s}.jobs
                WHERE state = 'waiting' AND queue = %(queue)s AND run_at <= now()
                ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING {cols}""")

        #: Cancel a waiting job: it moves to history as cancelled. A running job gets its
        #: ``cancel_requested`` flag set and its worker is told through the control channel.
        self.cancel_waiting = q("""
            WITH d AS (
                DELETE FROM {s}.jobs WHERE id = %(id)s AND state = 'waiting' RETURNING *)
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, enqueued_at, started_at)
            SELECT id, queue, task, args, priority, 'cancelled', attempt, max_attempts, errors,
                   created_at, started_at FROM d
            RETURNING id""")
        self.cancel_running = q("""
            WITH u AS (
                UPDATE {s}.jobs SET cancel_requested = true
                WHERE id = %(id)s AND state = 'running' RETURNING id, worker_id)
            SELECT id, pg_notify({ctl}, json_build_object('op', 'cancel', 'id', id,
                                                          'worker', worker_id)::text) FROM u""")
        self.cancel_requested = q("""
            SELECT id FROM {s}.jobs
             WHERE state = 'running' AND worker_id = %(worker)s AND cancel_requested""")

        self.get_job = q("SELECT {cols} FROM {s}.jobs WHERE id = %(id)s")

        # ---- the archive ------------------------------------------------------------------
        self.list_failed = q("""
            SELECT id, queue, task, args, priority, attempt, max_attempts, errors, reason,
                   enqueued_at, failed_at
              FROM {s}.failed_jobs
             WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
             ORDER BY failed_at DESC, id DESC LIMIT %(limit)s""")
        self.get_failed = q("""
            SELECT id, queue, task, args, priority, attempt, max_attempts, errors, reason,
                   enqueued_at, failed_at
              FROM {s}.failed_jobs WHERE id = %(id)s""")

        #: One finished job (succeeded or cancelled) by id. A plain read, no lock; each daily
        #: partition is probed through its primary key (id, finished_at).
        self.get_finished = q("""
            SELECT id, queue, task, args, priority, state, attempt, max_attempts, errors, result,
                   worker_id, enqueued_at, started_at, finished_at
              FROM {s}.job_history WHERE id = %(id)s
             ORDER BY finished_at DESC LIMIT 1""")

        #: Re-drive archived jobs: back to waiting with their id, attempt 0 and their errors kept.
        #: ``ids`` NULL means every archived job (of ``queue`` when given).
        self.redrive = q("""
            WITH d AS (
                DELETE FROM {s}.failed_jobs
                 WHERE (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
                   AND (%(queue)s::text IS NULL OR queue = %(queue)s)
                RETURNING *),
            ins AS (
                INSERT INTO {s}.jobs (id, queue, task, args, priority, max_attempts, unique_key,
                                      timeout_s, meta, errors, last_error, created_at)
                SELECT id, queue, task, args, priority, max_attempts, unique_key, timeout_s, meta,
                       errors, errors -> -1 ->> 'error', enqueued_at FROM d
                RETURNING id, queue)
            SELECT id, pg_notify({chan}, queue) FROM ins""")
        #: Which archived jobs a purge or a count concerns; each filter applies when its
        #: parameter is not NULL (all NULL: every archived job).
        f["failed_filter"] = sql.SQL("""
                 (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
             AND (%(queue)s::text IS NULL OR queue = %(queue)s)
             AND (%(task)s::text IS NULL OR task = %(task)s)
             AND (%(before)s::timestamptz IS NULL OR failed_at < %(before)s)""")
        #: Delete archived jobs (the filter above); returns how many (counted on the server).
        #: Locks the deleted rows of ``failed_jobs`` only; a concurrent re-drive of the same
        #: row waits, then finds it gone (or the purge finds it re-driven).
        self.purge_failed = q("""
            WITH d AS (
                DELETE FROM {s}.failed_jobs WHERE {failed_filter}
                RETURNING 1)
            SELECT count(*) FROM d""")
        #: How many archived jobs match the filter above (no locks: a plain read).
        self.count_failed = q("SELECT count(*) FROM {s}.failed_jobs WHERE {failed_filter}")

        # ---- periodic jobs (pgqueue.periodic) ----------------------------------------------
        #: A worker's declared schedules: insert new ones (their first tick is the first one
        #: after now), refresh the definition of known ones (their ``last_tick`` and ``paused``
        #: stay), and mark every other row stale (declared by no code that synced since). Locks
        #: the rows it writes, briefly; two workers syncing the same set write the same values.
        self.sync_schedules = q("""
            WITH r AS (
                SELECT * FROM unnest(%(names)s::text[], %(specs)s::text[], %(zones)s::text[],
                                     %(catch_ups)s::text[], %(tasks)s::text[],
                                     %(queues)s::text[], %(args)s::jsonb[],
                                     %(priorities)s::smallint[], %(max_attempts)s::int[],
                                     %(timeouts)s::float8[], %(metas)s::jsonb[],
                                     %(next_ticks)s::timestamptz[])
                    AS r(name, spec, timezone, catch_up, task, queue, args, priority,
                         max_attempts, timeout_s, meta, next_tick)),
            up AS (
                INSERT INTO {s}.schedules AS s (name, spec, timezone, catch_up, task, queue, args,
                                                priority, max_attempts, timeout_s, meta,
                                                next_tick)
                SELECT * FROM r
                ON CONFLICT (name) DO UPDATE SET
                    next_tick = CASE WHEN s.spec = excluded.spec
                                      AND s.timezone = excluded.timezone
                                     THEN s.next_tick ELSE excluded.next_tick END,
                    spec = excluded.spec, timezone = excluded.timezone,
                    catch_up = excluded.catch_up, task = excluded.task, queue = excluded.queue,
                    args = excluded.args, priority = excluded.priority,
                    max_attempts = excluded.max_attempts, timeout_s = excluded.timeout_s,
                    meta = excluded.meta, stale = false, seen_at = now()
                RETURNING name)
            UPDATE {s}.schedules SET stale = true
             WHERE NOT stale AND name <> ALL(%(names)s::text[])""")

        #: The database's clock and each named schedule's claimed state (a plain read: the
        #: claim below re-checks it).
        self.schedule_states = q("""
            SELECT now(), n.name, s.last_tick, s.paused
              FROM unnest(%(names)s::text[]) AS n(name)
              LEFT JOIN {s}.schedules s ON s.name = n.name""")

        #: Claim a schedule's due ticks and enqueue their jobs, in one statement (so in one
        #: transaction, also behind PgBouncer): ``u`` moves ``last_tick`` from the value the
        #: worker read (``expected``) to the newest due tick -- a compare-and-set -- and ``ins``
        #: inserts the jobs only if ``u`` updated the row. Two workers claiming the same tick
        #: both try to update the one ``schedules`` row: under READ COMMITTED the second waits
        #: for the first's row lock, then re-checks its WHERE on the committed row, where
        #: ``last_tick`` is no longer ``expected``; it updates nothing and so inserts nothing.
        #: A paused schedule is never claimed. Locks one ``schedules`` row until commit.
        self.claim_ticks = q("""
            WITH u AS (
                UPDATE {s}.schedules
                   SET last_tick = %(new_last)s, next_tick = %(next_tick)s,
                       last_fired_at = CASE WHEN cardinality(%(metas)s::jsonb[]) > 0
                                            THEN now() ELSE last_fired_at END
                 WHERE name = %(name)s AND last_tick = %(expected)s AND NOT paused
                RETURNING name),
            ins AS (
                INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_s, meta)
                SELECT %(queue)s::text, %(task)s::text, %(args)s::jsonb, %(priority)s::smallint,
                       %(max_attempts)s::int, %(timeout_s)s::float8, m.meta
                  FROM unnest(%(metas)s::jsonb[]) WITH ORDINALITY AS m(meta, ord)
                 WHERE EXISTS (SELECT 1 FROM u)
                 ORDER BY m.ord
                RETURNING id, queue),
            n AS (SELECT id, pg_notify({chan}, queue) FROM ins)
            SELECT 'claimed'::text, NULL::bigint FROM u
            UNION ALL SELECT 'job', id FROM n""")

        #: Pause or resume a schedule. Ticks that pass while it is paused never fire: resuming
        #: moves ``last_tick`` to now. Locks its row.
        self.set_schedule_paused = q("""
            UPDATE {s}.schedules
               SET last_tick = CASE WHEN paused AND NOT %(paused)s
                                    THEN greatest(last_tick, now()) ELSE last_tick END,
                   paused = %(paused)s
             WHERE name = %(name)s
            RETURNING name""")

        #: Enqueue a schedule's job now, outside its ticks (its tick state is untouched). Locks
        #: nothing but the new row.
        self.run_schedule_now = q("""
            WITH ins AS (
                INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_s, meta)
                SELECT queue, task, args, priority, max_attempts, timeout_s,
                       meta || jsonb_build_object('periodic', name, 'run_now', true)
                  FROM {s}.schedules WHERE name = %(name)s
                RETURNING id, queue)
            SELECT id, pg_notify({chan}, queue) FROM ins""")

        self.list_schedules = q("""
            SELECT name, spec, timezone, catch_up, task, queue, paused, stale, last_tick,
                   next_tick, last_fired_at, seen_at
              FROM {s}.periodic_schedules ORDER BY name""")

        # ---- leases (the cluster leader) ------------------------------------------------------
        #: Take or renew the lease ``name`` for ``ttl`` seconds: a row with an expiry, not a
        #: session advisory lock, so it works behind PgBouncer in transaction mode and a holder
        #: that dies simply lets it expire. The holder renews; anyone else takes it only once it
        #: has expired. ``ON CONFLICT DO UPDATE`` locks the row and re-checks the WHERE on its
        #: committed version, so two takers cannot both win. Returns a row if ``holder`` holds it.
        self.acquire_lease = q("""
            INSERT INTO {s}.leases AS l (name, holder, expires_at, acquired_at)
            VALUES (%(name)s, %(holder)s, now() + make_interval(secs => %(ttl)s), now())
            ON CONFLICT (name) DO UPDATE SET
                holder = excluded.holder, expires_at = excluded.expires_at,
                acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at
                                   ELSE excluded.acquired_at END
             WHERE l.holder = excluded.holder OR l.expires_at < now()
            RETURNING holder""")
        #: Give the lease up (a clean shutdown), so that another worker takes it at once.
        self.release_lease = q("""
            DELETE FROM {s}.leases WHERE name = %(name)s AND holder = %(holder)s""")

        #: History retention: drop the daily ``job_history`` partitions that ended more than
        #: ``keep`` seconds ago (by the database's clock), and the default partition's older
        #: rows. Takes an ACCESS EXCLUSIVE lock on each dropped partition (nobody writes there:
        #: finished jobs go into today's partition).
        self.drop_history_older = q(
            "SELECT {s}.drop_history_before(now() - make_interval(secs => %(keep)s))")

        # ---- inspection and maintenance ---------------------------------------------------
        self.queue_stats = q("""
            SELECT queue, paused, waiting, scheduled, running, failed, finished_last_hour,
                   failed_last_hour, oldest_wait_s, mean_run_time_s
              FROM {s}.queue_stats ORDER BY queue""")
        #: Dead row versions in ``jobs`` (claims and completions leave one each) as the
        #: statistics see them; they decide when a worker vacuums (see ``vacuum_jobs``).
        self.jobs_dead_tuples = sql.SQL("""
            SELECT coalesce(n_dead_tup, 0), coalesce(n_live_tup, 0) FROM pg_stat_user_tables
             WHERE relid = to_regclass({table})""").format(table=sql.Literal(f"{schema}.jobs"))
        #: One vacuuming worker at a time per schema (a session advisory lock, released after).
        self.try_vacuum_lock = sql.SQL("SELECT pg_try_advisory_lock(hashtext({key}))").format(
            key=sql.Literal(f"pgqueue.vacuum.{schema}"))
        self.vacuum_unlock = sql.SQL("SELECT pg_advisory_unlock(hashtext({key}))").format(
            key=sql.Literal(f"pgqueue.vacuum.{schema}"))
        #: Claimed and finished jobs leave dead entries at the front of the claim index; until a
        #: vacuum removes them every claim steps over them, so a large backlog drains slower and
        #: slower. Autovacuum may be off, or too slow for a queue (its naptime is a minute).
        self.vacuum_jobs = q("VACUUM (TRUNCATE false) {s}.jobs")
        self.ensure_partitions = q("SELECT {s}.ensure_history_partitions(%(days)s)")
        self.drop_history_before = q("SELECT {s}.drop_history_before(%(cutoff)s)")
        self.version = q("SELECT version_num FROM {s}.pgqueue_alembic_version")


@cache
def statements(schema: str) -> Statements:
    """The cached statements of a schema."""
    return Statements(schema)
