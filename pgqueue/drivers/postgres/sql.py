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

__all__ = ["BACKEND_PID", "BEGIN_READ_COMMITTED", "COMMIT", "COPY_COLUMNS", "COPY_OPTIONAL",
           "DASHBOARD_READS", "JOB_COLUMNS",
           "SET_LOCAL_JIT_OFF", "SET_SESSION_SETTING",
           "DashboardStatements", "Statements", "channel_names", "dashboard_statements",
           "set_local", "statements"]

#: Set one setting (``lock_timeout``, ``statement_timeout``) for the rest of the session; run
#: once on each new connection of pgqueue's pools -- never behind a transaction pooler, where
#: the server session is shared with other clients (see :func:`set_local`). Locks nothing.
SET_SESSION_SETTING = sql.SQL("SELECT set_config(%(name)s, %(value)s, false)")


def _earliest(*, after_key: bool) -> str:
    """The earliest ``run_at`` of queue ``qn.name``'s waiting jobs, a LATERAL subquery over
    ``qn`` (see ``earliest`` and ``next_run_at`` in :class:`Statements`). ``after_key``: only
    of the entries of ``jobs_claim_idx`` after ``qn``'s key ``(ap, ar, ai)`` -- the first
    entry after it, then the loose scan over the higher priority numbers."""
    first = ("""
                SELECT (SELECT j.run_at FROM {s}.jobs j
                         WHERE j.queue = qn.name AND j.state = 'waiting'
                           AND j.concurrency_key IS NULL
                           AND (j.priority, j.run_at, j.id) > (qn.ap, qn.ar, qn.ai)
                         ORDER BY j.priority, j.run_at, j.id LIMIT 1) AS at
                UNION ALL""" if after_key else "")
    above = "AND j.priority > qn.ap" if after_key else ""
    return """
            SELECT min(e.at) FROM (""" + first + """
                (WITH RECURSIVE pr(priority) AS (
                    (SELECT j.priority FROM {s}.jobs j
                      WHERE j.queue = qn.name AND j.state = 'waiting'
                        AND j.concurrency_key IS NULL """ + above + """
                      ORDER BY j.priority LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.priority FROM {s}.jobs j
                             WHERE j.queue = qn.name AND j.state = 'waiting'
                               AND j.concurrency_key IS NULL AND j.priority > pr.priority
                             ORDER BY j.priority LIMIT 1)
                      FROM pr WHERE pr.priority IS NOT NULL)
                 SELECT (SELECT j.run_at FROM {s}.jobs j
                          WHERE j.queue = qn.name AND j.state = 'waiting'
                            AND j.concurrency_key IS NULL AND j.priority = pr.priority
                          ORDER BY j.run_at LIMIT 1) AS at
                   FROM pr WHERE pr.priority IS NOT NULL)
                UNION ALL
                SELECT min(j.run_at) FROM {s}.jobs j
                 WHERE j.queue = qn.name AND j.state = 'waiting'
                   AND j.concurrency_key IS NOT NULL) e"""


#: The queues of a claim or of ``next_run_at`` with their keys, one row each (``qn``). The
#: number of queues, ``{queues}``, is written in: the planner expects an array parameter to
#: hold 100 elements, and a generic plan priced for 100 index scans lost to the custom plans
#: for ever, so the statement was planned at every execution (as with the claim's limit:
#: see :func:`claim_bound`).
_QUEUE_KEYS = """(SELECT * FROM unnest(%(queues)s::text[], %(after_p)s::smallint[],
                                  %(after_r)s::timestamptz[], %(after_i)s::bigint[])
                       AS qn(name, ap, ar, ai)
                 LIMIT {queues}) qn"""


def set_local(settings: dict[str, str]) -> sql.Composed:
    """Set ``settings`` for the current transaction only (``SET LOCAL``): the values end with
    the transaction, so nothing stays on a server session that a pooler hands to another
    client. The limited claims run it first in their transaction (``synchronous_commit``,
    ``jit``). The names and values are written in the statement (rendered once per driver):
    sending them as two array parameters cost the limited claim about as much as running the
    statement, for every claim. For settings chosen by pgqueue's code only, never for user
    input. Locks nothing."""
    return sql.Composed([sql.SQL("SELECT "), sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
        for k, v in settings.items())])


#: The limited claim's transaction, begun and committed by statements of its own inside the
#: claim's pipeline: psycopg's ``transaction()`` block around a pipeline costs more than the
#: claim itself (measured in ``docs/performance.md``, Flow control). READ COMMITTED is stated
#: here, whatever the server's or the session's default: the claim's proof needs a fresh
#: snapshot for each statement (see ``claim_limited``). Lock nothing by themselves.
BEGIN_READ_COMMITTED = sql.Composed([sql.SQL("BEGIN ISOLATION LEVEL READ COMMITTED")])
COMMIT = sql.Composed([sql.SQL("COMMIT")])

#: The pid of the server process this connection reaches. Behind a pooler (PgBouncer and the
#: like) it differs from the pid the connection announced at startup (``BackendKeyData``):
#: the pooler makes up its own, for cancel requests. Locks nothing.
BACKEND_PID = sql.SQL("SELECT pg_backend_pid()")

#: The smallest bound of a claim's limit, and the factor between bounds (see claim_bound).
CLAIM_BOUND_MIN = 16
CLAIM_BOUND_STEP = 8


def claim_bound(limit: int) -> int:
    """The literal upper bound written into a claim statement for ``limit`` (16, 128, 1024...).

    With only ``LIMIT %(limit)s``, PostgreSQL's generic plan of the prepared claim assumes the
    limit takes a tenth of the queue's rows, prices that above the custom plans, and so the
    server planned the claim again at every execution: 116 us a claim, as long as running it
    (claims of 10, docs/performance.md). Under ``LIMIT <bound>`` the generic plan expects a
    tenth of the bound, is the cheapest, and is reused once psycopg has prepared the statement.
    The limit itself stays a parameter, an outer ``LIMIT`` that pulls only ``limit`` rows
    through the locking one, so exactly ``limit`` rows are locked. A few bounds keep the
    statements few (each is prepared on every connection)."""
    bound = CLAIM_BOUND_MIN
    while bound < limit:
        bound *= CLAIM_BOUND_STEP
    return bound

#: Columns returned wherever a :class:`pgqueue.job.Job` is built from a row, in this order.
JOB_COLUMNS = (
    "id", "queue", "task", "args", "priority", "attempt", "max_attempts", "run_at",
    "created_at", "unique_key", "timeout_s", "errors", "meta", "state", "snoozes",
)


#: The columns every bulk ``COPY`` of jobs sends, and those it sends only when a row of the
#: batch needs them (see :meth:`Statements.copy_jobs`).
COPY_COLUMNS = ("id", "queue", "task", "args", "priority", "max_attempts")
COPY_OPTIONAL = ("run_at", "timeout_s", "meta", "concurrency_key")


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
             "done": sql.Literal(f"{schema}.done"),
             "done_ident": sql.Identifier(f"{schema}.done"),
             "cols": _cols(),
             # a claimed job's past errors are not sent back: the handler does not need them
             # and decoding them for every job costs the worker time
             "claimcols": _cols("j.", skip=("errors",))}

        #: ``state = {running}`` in the statements that find running jobs by id: the state as
        #: an InitPlan's value, not a constant, so that the planner can never prove the
        #: predicate of ``jobs_running_lease_idx`` and reads those rows through ``jobs_pkey``.
        #: The partial index looks cheapest whenever its statistics are small, and a bitmap
        #: scan of all of it then finds the ids; but while a snapshot holds vacuum back it keeps
        #: an entry for every job claimed since, and each completion read them all (37 ms per
        #: batch of 100 with 300,000 of them, against 1 ms through the key: docs/performance.md,
        #: "Held snapshot"). Not in ``finish_watched`` and ``requeue_many`` (rarer: jobs with
        #: dependents, retries), whose join with their batch needs that index's plan to stay
        #: linear (see ``finish_many``).
        f["running"] = sql.SQL("(SELECT 'running'::text)")

        #: The ownership guard of a single-job outcome (see the module docstring): take job
        #: ``id`` out of ``jobs`` only while it runs under ``worker`` at the claimed ``attempt``.
        f["take_held"] = sql.SQL("""
                DELETE FROM {s}.jobs
                WHERE id = %(id)s AND state = {running} AND worker_id = %(worker)s
                  AND attempt = coalesce(%(attempt)s::int, attempt)
                RETURNING *""").format(s=s, running=f["running"])

        #: A queue row that the unlimited claim must leave alone: paused, or with a limit.
        f["limited"] = sql.SQL(
            "(p.paused OR p.concurrency IS NOT NULL OR p.key_concurrency IS NOT NULL"
            " OR p.rate_limit IS NOT NULL)")

        #: Whether this transaction holds the queue row ``p``: step 1 locked it (``FOR UPDATE``
        #: makes our transaction id its ``xmax``; nobody else can lock it meanwhile, and there
        #: are no foreign keys to share the lock) or inserted it. A row that step 1 skipped
        #: fails this test, so step 2 claims nothing from it: no claim ever counts without the
        #: lock.
        f["owned"] = sql.SQL(
            "xid(pg_current_xact_id_if_assigned()) IN (p.xmax, p.xmin)")

        #: The limited claims' free slots (``n``): at most ``limit``, the queue's free
        #: concurrency slots (its running rows counted), and the starts its rate allows in the
        #: window that ends at ``qq.ts``. NULL limits do not bound (``least`` ignores NULLs).
        f["room"] = sql.SQL("""
                SELECT qq.*, greatest(0, least(
                    %(limit)s::int,
                    qq.concurrency - (SELECT count(*) FROM {s}.jobs r
                                       WHERE r.queue = %(queue)s AND r.state = 'running'),
                    qq.rate_limit - (SELECT count(*) FROM {s}.queue_starts st
                                      WHERE st.queue = %(queue)s
                                        AND st.started_at > qq.ts
                                            - make_interval(secs => qq.rate_period_s))))
                    AS n
                  FROM qq""").format(s=s)
        #: The limited claims' end: the rows of ``c`` become running, started at ``qq.ts``
        #: (``c`` never holds more than ``limit`` rows; saying so keeps the planner from
        #: joining it to ``jobs`` with a hash over the whole table).
        f["claim_started"] = sql.SQL("""
                UPDATE {s}.jobs j
                   SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
                       started_at = (SELECT ts FROM qq),
                       lease_expires_at = now() + make_interval(secs => %(lease)s)
                  FROM (SELECT id FROM c LIMIT %(limit)s) c WHERE j.id = c.id
                RETURNING {claimcols}""").format(s=s, claimcols=f["claimcols"])
        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**{k: v for k, v in f.items() if "{" + k + "}" in text})

        self.schema = schema
        self.jobs_channel = jobs_chan
        self.control_channel = ctl_chan
        self.done_channel = f"{schema}.done"

        # ---- enqueue ----------------------------------------------------------------------
        #: Insert one job and wake the workers of its queue at commit. Locks nothing but the new
        #: row (and, with a unique key, waits for a concurrent insert of the same key to finish).
        #: Returns no row when a live job already holds ``unique_key``.
        self.insert_one = q("""
            WITH ins AS (
                INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, run_at,
                                      unique_key, timeout_s, meta, concurrency_key)
                VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
                        coalesce(%(run_at)s, now() + make_interval(secs => coalesce(%(delay)s, 0))),
                        %(unique_key)s, %(timeout_s)s, %(meta)s::jsonb, %(concurrency_key)s)
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id, queue)
            SELECT id, pg_notify({chan}, queue) FROM ins""")

        #: The id of the live job that holds a unique key (after ``insert_one`` returned nothing).
        self.id_by_unique_key = q("""
            SELECT id FROM {s}.jobs WHERE unique_key = %(unique_key)s AND unique_key IS NOT NULL""")

        #: Reserve ``n`` job ids (bulk paths insert with explicit ids so callers get them back
        #: in input order) and read the transaction's clock for delays computed client-side.
        #: The sequence is looked up once (a scalar sub-select: an InitPlan), not per row:
        #: ``pg_get_serial_sequence`` and its cast to ``regclass`` cost the server ~3.5 us per
        #: id, ten times the ``nextval`` itself. Locks nothing (``nextval`` is not transactional).
        self.reserve_ids = sql.SQL("""
            SELECT now(), array(SELECT nextval((SELECT pg_get_serial_sequence({table}, 'id')
                                                       ::regclass))
                                  FROM generate_series(1, %(n)s))""").format(
            table=sql.Literal(f"{schema}.jobs"))

        #: Bulk path for small batches and batches with unique keys: one multi-row INSERT from
        #: arrays. Conflicting unique keys are skipped; their rows are not returned.
        self.insert_many = q("""
            INSERT INTO {s}.jobs (id, queue, task, args, priority, max_attempts, run_at,
                                  unique_key, timeout_s, meta, concurrency_key)
            SELECT * FROM unnest(%(ids)s::bigint[], %(queues)s::text[], %(tasks)s::text[],
                                 %(args)s::jsonb[], %(priorities)s::smallint[],
                                 %(max_attempts)s::int[], %(run_ats)s::timestamptz[],
                                 %(unique_keys)s::text[], %(timeouts)s::float8[],
                                 %(metas)s::jsonb[], %(concurrency_keys)s::text[])
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING id""")

        #: Bulk path for large batches without unique keys: see :meth:`copy_jobs`.
        self._copy_jobs: dict[tuple[str, ...], sql.Composed] = {}

        #: One wake-up per queue (not per row), delivered at commit.
        self.notify_queues = q("SELECT pg_notify({chan}, q) FROM unnest(%(queues)s::text[]) q")

        # ---- worker: claim ----------------------------------------------------------------
        #: Both claims end here: the rows locked in the CTE ``c`` become ``running`` under this
        #: worker with ``attempt + 1`` and a lease of ``lease`` seconds. The claim commits
        #: without waiting for the WAL flush: ``synchronous_commit`` is set for this statement's
        #: own transaction (``set_config(..., true)``, evaluated once as an InitPlan, read at its
        #: commit, gone after it: nothing stays on the session, which a pooler may lend to
        #: another client, and no extra round trip). See ``_claim_settings`` in the driver for
        #: why a lost claim is safe. The rows are found by id through ``jobs_pkey``
        #: (``ANY`` of an array the planner expects to hold about ten ids: no generic plan
        #: joins ``c`` to the whole table with a hash); they come back in id order.
        claim_rows = """
            UPDATE {s}.jobs j
               SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
                   started_at = now(), lease_expires_at = now() + make_interval(secs => %(lease)s)
             WHERE j.id = ANY(ARRAY(SELECT id FROM c))
               AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
            RETURNING {claimcols}"""

        #: Claim up to ``limit`` ready jobs of one queue, in (priority, run_at, id) order. The CTE
        #: is the fence: ``FOR UPDATE SKIP LOCKED`` locks exactly the rows this worker takes and
        #: skips rows other workers are claiming; served by the partial index ``jobs_claim_idx``.
        #: A paused queue yields nothing (one lookup in ``queues``, evaluated once), and so does
        #: a queue with a limit, and jobs with a concurrency key: those go through
        #: ``claim_limited`` (the unlimited path stays this one statement). ``{bound}``: see
        #: :func:`claim_bound`.
        self._claim_one_text = """
            WITH c AS (
                SELECT id FROM (
                    SELECT id, priority, run_at FROM {s}.jobs
                    WHERE state = 'waiting' AND queue = %(queue)s AND run_at <= now()
                      AND concurrency_key IS NULL
                      AND (priority, run_at, id) > (%(after_p)s::smallint,
                                                    %(after_r)s::timestamptz, %(after_i)s::bigint)
                      AND NOT EXISTS (SELECT 1 FROM {s}.queues p
                                      WHERE p.name = %(queue)s AND {limited})
                    ORDER BY priority, run_at, id
                    LIMIT {bound}
                    FOR UPDATE SKIP LOCKED) b
                LIMIT %(limit)s)""" + claim_rows

        #: The same over several queues: the best ``limit`` jobs of each unpaused queue are
        #: locked through the index (LATERAL, one index scan per queue), then the best ``limit``
        #: overall are taken. Extra rows locked in the CTE are released at commit.
        self._claim_many_text = """
            WITH c AS (
                SELECT cand.id, cand.priority, cand.run_at
                FROM """ + _QUEUE_KEYS + """
                CROSS JOIN LATERAL (
                    SELECT id, priority, run_at FROM (
                        SELECT id, priority, run_at FROM {s}.jobs
                        WHERE state = 'waiting' AND queue = qn.name AND run_at <= now()
                          AND concurrency_key IS NULL
                          AND (priority, run_at, id) > (qn.ap, qn.ar, qn.ai)
                          AND NOT EXISTS (SELECT 1 FROM {s}.queues p
                                          WHERE p.name = qn.name AND {limited})
                        ORDER BY priority, run_at, id
                        LIMIT {bound}
                        FOR UPDATE SKIP LOCKED) b
                    LIMIT %(limit)s) cand
                ORDER BY cand.priority, cand.run_at, cand.id
                LIMIT %(limit)s)""" + claim_rows
        self._formats = {k: v for k, v in f.items() if k in ("s", "limited", "claimcols")}
        self._variants: dict[tuple[str, int, int], sql.Composed] = {}

        # ---- worker: the limited claim (flow control) --------------------------------------
        #: Which of these queues the limited claim serves: those with a limit in ``queues``
        #: and those with ready keyed jobs (a key is capped at 1 running job by default). A
        #: plain read; a worker refreshes it about once a second.
        #: Also says which of them may take the capped claim (``capped``: no rate limit, no
        #: keyed jobs waiting); the others take ``claim_limited``.
        self.limited_queues = q("""
            SELECT l.name, l.limited AND l.rate_limit IS NULL AND NOT l.keyed FROM (
                SELECT qn.name, p.rate_limit,
                       p.concurrency IS NOT NULL OR p.key_concurrency IS NOT NULL
                       OR p.rate_limit IS NOT NULL AS limited,
                       EXISTS (SELECT 1 FROM {s}.jobs j
                                WHERE j.queue = qn.name AND j.state = 'waiting'
                                  AND j.concurrency_key IS NOT NULL) AS keyed
                  FROM unnest(%(queues)s::text[]) AS qn(name)
                  LEFT JOIN {s}.queues p ON p.name = qn.name AND NOT p.paused) l
             WHERE l.limited OR l.keyed""")

        #: Step 1 of the limited claim (in a READ COMMITTED transaction): lock the ``queues``
        #: rows of the limited queues, creating missing ones (a queue whose only limit is the
        #: per-key default). Every claim of a limited queue takes this row lock first and holds
        #: it until its commit: limited claims of one queue run one after the other. A row that
        #: another claimer holds is skipped, not waited for (``SKIP LOCKED``): that claimer is
        #: taking what the queue allows right now, and many idle workers polling a queue whose
        #: limit binds must not queue up behind one another. Rows this statement inserts are
        #: not visible to its own SELECT, but they are ours until commit (a concurrent insert of
        #: the same name waits for it), so they are serialised all the same. Step 2 claims only
        #: from rows this transaction locked or inserted (``{owned}``).
        #: Returns the names it locked or inserted.
        self.lock_limited_queues = q("""
            WITH ins AS (
                INSERT INTO {s}.queues (name)
                SELECT n FROM unnest(%(queues)s::text[]) AS n ORDER BY n
                ON CONFLICT (name) DO NOTHING RETURNING name),
            l AS (
                SELECT name FROM {s}.queues WHERE name = ANY(%(queues)s::text[])
                 ORDER BY name FOR UPDATE SKIP LOCKED)
            SELECT name FROM ins UNION ALL SELECT name FROM l""")

        #: Step 1 of the capped claim: lock one queue's row (which exists: the queue has a
        #: limit), as ``lock_limited_queues`` does (skipping it while another claimer holds it),
        #: without trying to insert it first.
        self.lock_queue = q("""
            SELECT name FROM {s}.queues WHERE name = %(queue)s FOR UPDATE SKIP LOCKED""")

        #: Step 2 of the claim of a queue with a concurrency limit, no rate limit and no keyed
        #: jobs waiting (the common case). The same proof as ``claim_limited`` below (it runs
        #: after step 1, so its snapshot sees every earlier claim's running rows), but the jobs
        #: are read like the unlimited claim reads them, in one scan of ``jobs_claim_idx``, and
        #: nothing is logged: a small statement, cheap to plan and to run, so that a limit that
        #: does not bind costs little. Keyed jobs that arrived since the worker last looked wait
        #: for ``claim_limited`` (running ones count all the same), and a queue that gained a
        #: rate limit meanwhile yields nothing here (``qq`` is empty) until the worker looks
        #: again. Locks the claimed rows ``FOR UPDATE SKIP LOCKED``.
        self.claim_capped = q("""
            WITH qq AS MATERIALIZED (
                SELECT p.concurrency, p.rate_limit, p.rate_period_s, clock_timestamp() AS ts
                  FROM {s}.queues p
                 WHERE p.name = %(queue)s AND NOT p.paused AND p.rate_limit IS NULL
                   AND {owned}),
            room AS MATERIALIZED ({room}),
            c AS (
                SELECT id FROM {s}.jobs
                 WHERE state = 'waiting' AND queue = %(queue)s AND run_at <= now()
                   AND concurrency_key IS NULL
                 ORDER BY priority, run_at, id
                 LIMIT coalesce((SELECT n FROM room), 0)  -- no row: no room (not LIMIT ALL)
                 FOR UPDATE SKIP LOCKED),
            u AS ({claim_started})
            SELECT * FROM u""")

        #: Step 2, one statement per limited queue, in the same transaction as step 1. Why two
        #: workers cannot both take the last slot: under READ COMMITTED each statement reads a
        #: snapshot taken when *it* starts. This statement starts after step 1 got the queue
        #: row's lock (step 1 takes it only when nobody holds it, and this statement claims
        #: nothing unless step 1 took it: ``{owned}``), so after the previous holder committed;
        #: its snapshot sees every job that
        #: previous claims made ``running`` (and every start they logged). The slots it counts
        #: can only be fewer than it sees (a completion committing meanwhile frees one; nothing
        #: but a claim holding this same lock can take one), so it never hands out more than
        #: ``concurrency - running`` jobs, never more than ``rate_limit`` starts in any window of
        #: ``rate_period_s`` (the start time ``ts`` is read after the lock, so starts are logged
        #: in lock order), and never more than ``key_concurrency`` (default 1) per key. A
        #: single statement that locked the row in a CTE would not do: its snapshot would
        #: predate the lock wait and count stale running rows.
        #:
        #: Fairness: keyed candidates are ranked within their key (``rn``) and taken in order
        #: (priority, rn, run_at, id): round-robin over the keys within a priority, so a key
        #: with a huge backlog cannot starve another. Keys at their limit offer no candidate.
        #: Jobs without a key queue in (priority, run_at, id) order with rank 1. The keys are
        #: found by a skip scan (``ks``: one index probe per distinct waiting key) and each
        #: key's candidates read through ``jobs_key_claim_idx`` up to its free slots, so a
        #: claim costs in proportion to the number of keys, not to their backlogs.
        #:
        #: The claimed rows are locked ``FOR UPDATE SKIP LOCKED`` (a cancel may hold one).
        #: A limited job waits: it is simply not claimed, its attempt untouched.
        self.claim_limited = q("""
            WITH RECURSIVE qq AS MATERIALIZED (
                SELECT p.concurrency, p.rate_limit, p.rate_period_s, p.key_rate_limit,
                       p.key_rate_period_s, clock_timestamp() AS ts,
                       -- NULL: a key's running jobs are not capped (only its rate is)
                       coalesce(p.key_concurrency,
                                CASE WHEN p.key_rate_limit IS NULL THEN 1 END) AS per_key,
                       -- how long a logged start matters (NULL: starts are not logged)
                       greatest(p.rate_period_s, p.key_rate_period_s) AS keep_s
                  FROM {s}.queues p WHERE p.name = %(queue)s AND NOT p.paused AND {owned}),
            room AS MATERIALIZED ({room}),
            keyrun AS (
                SELECT r.concurrency_key AS k, count(*) AS n FROM {s}.jobs r
                 WHERE r.queue = %(queue)s AND r.state = 'running'
                   AND r.concurrency_key IS NOT NULL
                 GROUP BY r.concurrency_key),
            ks(k) AS (  -- each key with waiting jobs: a skip scan of jobs_key_claim_idx
                (SELECT j.concurrency_key FROM {s}.jobs j
                  WHERE j.queue = %(queue)s AND j.state = 'waiting'
                    AND j.concurrency_key IS NOT NULL
                  ORDER BY j.concurrency_key LIMIT 1)
                UNION ALL
                SELECT (SELECT j.concurrency_key FROM {s}.jobs j
                         WHERE j.queue = %(queue)s AND j.state = 'waiting'
                           AND j.concurrency_key IS NOT NULL AND j.concurrency_key > ks.k
                         ORDER BY j.concurrency_key LIMIT 1)
                  FROM ks WHERE ks.k IS NOT NULL),
            keyed AS (  -- each key's first free-slot jobs, read in order through the index
                SELECT x.id, x.priority, x.run_at, ks.k FROM ks
                  LEFT JOIN keyrun ON keyrun.k = ks.k
                 CROSS JOIN room
                 CROSS JOIN LATERAL (  -- the key's starts in its rate window, if it has one
                    SELECT count(*) AS n FROM {s}.queue_starts st
                     WHERE room.key_rate_limit IS NOT NULL
                       AND st.queue = %(queue)s AND st.concurrency_key = ks.k
                       AND st.started_at > room.ts
                                           - make_interval(secs => room.key_rate_period_s)) kst
                 CROSS JOIN LATERAL (
                    SELECT j.id, j.priority, j.run_at FROM {s}.jobs j
                     WHERE j.queue = %(queue)s AND j.state = 'waiting'
                       AND j.concurrency_key = ks.k AND j.run_at <= now()
                     ORDER BY j.priority, j.run_at, j.id
                     LIMIT greatest(0, least(%(limit)s::int,
                                             room.per_key - coalesce(keyrun.n, 0),
                                             room.key_rate_limit - kst.n))) x
                 WHERE ks.k IS NOT NULL),
            cand AS (
                SELECT keyed.id, keyed.priority, keyed.run_at,
                       row_number() OVER (PARTITION BY keyed.k
                                          ORDER BY keyed.priority, keyed.run_at, keyed.id) AS rn
                  FROM keyed
                UNION ALL
                (SELECT j.id, j.priority, j.run_at, 1 FROM {s}.jobs j
                  WHERE j.queue = %(queue)s AND j.state = 'waiting' AND j.run_at <= now()
                    AND j.concurrency_key IS NULL
                  ORDER BY j.priority, j.run_at, j.id LIMIT %(limit)s)),
            pick AS (  -- the constant LIMIT keeps the planner's estimates small
                SELECT p.id FROM (
                    SELECT cand.id, row_number() OVER (
                               ORDER BY cand.priority, cand.rn, cand.run_at, cand.id) AS pos
                      FROM cand) p
                 WHERE p.pos <= coalesce((SELECT n FROM room), 0)
                 ORDER BY p.pos LIMIT %(limit)s),
            c AS (
                SELECT j.id, j.concurrency_key FROM {s}.jobs j
                 WHERE j.id IN (SELECT id FROM pick) AND j.state = 'waiting'
                   FOR UPDATE SKIP LOCKED),
            u AS ({claim_started}),
            logged AS (  -- each start of a rate-limited queue, with its key
                INSERT INTO {s}.queue_starts (queue, started_at, concurrency_key)
                SELECT %(queue)s, qq.ts, c.concurrency_key FROM u JOIN c ON c.id = u.id, qq
                 WHERE qq.keep_s IS NOT NULL),
            pruned AS (  -- and the starts that left every window (all: no rate limit)
                DELETE FROM {s}.queue_starts st USING qq
                 WHERE st.queue = %(queue)s
                   AND (qq.keep_s IS NULL
                        OR st.started_at <= qq.ts - make_interval(secs => qq.keep_s)))
            SELECT * FROM u""")

        #: Set a queue's limits (NULL: none), creating its row. Locks that row: a running
        #: limited claim finishes first. Takes effect at the next claim.
        #: Without any rate limit left, the queue's logged starts are deleted (no claim would
        #: prune them: the capped claim logs nothing).
        self.set_limits = q("""
            WITH up AS (
                INSERT INTO {s}.queues AS p (name, concurrency, key_concurrency, rate_limit,
                                             rate_period_s, key_rate_limit, key_rate_period_s)
                VALUES (%(queue)s, %(concurrency)s, %(key_concurrency)s, %(rate_limit)s,
                        %(rate_period_s)s, %(key_rate_limit)s, %(key_rate_period_s)s)
                ON CONFLICT (name) DO UPDATE SET
                    concurrency = excluded.concurrency,
                    key_concurrency = excluded.key_concurrency,
                    rate_limit = excluded.rate_limit, rate_period_s = excluded.rate_period_s,
                    key_rate_limit = excluded.key_rate_limit,
                    key_rate_period_s = excluded.key_rate_period_s, updated_at = now()
                RETURNING name)
            DELETE FROM {s}.queue_starts
             WHERE queue = %(queue)s AND %(rate_limit)s::int IS NULL
               AND %(key_rate_limit)s::int IS NULL""")

        #: The earliest ``run_at`` of queue ``qn.name``'s waiting jobs (a LATERAL subquery over
        #: ``qn``), through the claim indexes without reading all of a queue's entries: for
        #: jobs without a key, a loose scan of ``jobs_claim_idx`` finds each distinct priority
        #: (one probe each) and then that priority's earliest ``run_at`` (one probe each);
        #: keyed jobs, which make the queue a limited one anyway, take ``min`` over their
        #: range of ``jobs_key_claim_idx``. A plain ``min(run_at)`` read every waiting entry
        #: of the queue: with 300,000 jobs scheduled for tomorrow, 60-100 ms per idle worker
        #: per look; this takes 0.2 ms.
        earliest = _earliest(after_key=False)

        #: When the next waiting job of these (unpaused) queues becomes due (for sleeping until
        #: then). A plain read. Each queue is read after a key ``(after_p, after_r, after_i)``
        #: of ``jobs_claim_idx``, as the claim is (``HEAD``: all of it): the first entry after
        #: the key (the earliest ``run_at`` left in the key's priority, or the first of the next
        #: one), and the earliest of every higher priority number, found as in ``earliest``.
        #: From a worker's claim key it skips the entries of the jobs that worker claimed,
        #: which a held snapshot keeps (see :mod:`pgqueue.drivers.postgres.claim_cursor`). The
        #: row comparison alone bounds the first probe: with ``priority = after_p`` beside it,
        #: PostgreSQL started at the head of the key's priority and read every entry up to the
        #: key (20 ms for 100,000 of them).
        #: ``{queues}``: see ``_QUEUE_KEYS`` (planned at every call, it took 1 ms of planning
        #: for a 0.05 ms read, after every short claim of an idle worker).
        self._next_run_at_text = """
            SELECT min(x.at) FROM """ + _QUEUE_KEYS + """
             CROSS JOIN LATERAL (""" + _earliest(after_key=True) + """) AS x(at)
             WHERE NOT EXISTS (SELECT 1 FROM {s}.queues p WHERE p.name = qn.name AND p.paused)"""

        #: ``next_run_at`` for a worker some of whose queues are limited (``limited``): in how
        #: many seconds, by the database's clock, a claim may take something. A limited queue
        #: with ready jobs counts with the moment its rate window next frees a start, when its
        #: rate binds: the ``rate_limit``-th newest start in the window leaves it then (the
        #: claim counts starts after ``ts - rate_period_s``), so one start is free again. A
        #: limited queue with ready jobs whose rate does not bind (a concurrency or per-key
        #: limit holds them, or another claimer held the queue's row) counts with
        #: ``recheck`` seconds. Other queues, and limited ones without ready jobs, count with
        #: their earliest ``run_at`` as in ``next_run_at``. NULL: nothing waits.
        #: A plain read; it locks nothing (the claim still enforces every limit).
        self.next_claim_in = q("""
            WITH lq AS (  -- the limited, unpaused queues with ready jobs
                SELECT qn.name, p.rate_limit, p.rate_period_s
                  FROM unnest(%(limited)s::text[]) AS qn(name)
                  LEFT JOIN {s}.queues p ON p.name = qn.name
                 WHERE NOT coalesce(p.paused, false)
                   AND (EXISTS (SELECT 1 FROM {s}.jobs j  -- jobs_claim_idx
                                 WHERE j.queue = qn.name AND j.state = 'waiting'
                                   AND j.concurrency_key IS NULL AND j.run_at <= now())
                        OR EXISTS (SELECT 1 FROM {s}.jobs j  -- jobs_key_claim_idx
                                    WHERE j.queue = qn.name AND j.state = 'waiting'
                                      AND j.concurrency_key IS NOT NULL
                                      AND j.run_at <= now()))),
            frees AS (
                SELECT coalesce(
                    (SELECT st.started_at + make_interval(secs => lq.rate_period_s)
                       FROM {s}.queue_starts st
                      WHERE lq.rate_limit IS NOT NULL AND st.queue = lq.name
                        AND st.started_at > clock_timestamp()
                                            - make_interval(secs => lq.rate_period_s)
                      ORDER BY st.started_at DESC
                     OFFSET greatest(lq.rate_limit - 1, 0) LIMIT 1),
                    clock_timestamp() + make_interval(secs => %(recheck)s)) AS at
                  FROM lq),
            later AS (  -- the other unpaused queues' earliest run_at (``earliest`` above)
                SELECT x.at FROM unnest(%(queues)s::text[]) AS qn(name)
                 CROSS JOIN LATERAL (""" + earliest + """) AS x(at)
                 WHERE qn.name NOT IN (SELECT name FROM lq)
                   AND NOT EXISTS (SELECT 1 FROM {s}.queues p
                                    WHERE p.name = qn.name AND p.paused))
            SELECT extract(epoch FROM least((SELECT min(at) FROM frees),
                                            (SELECT min(at) FROM later))
                                      - clock_timestamp())::float8""")

        # ---- workflows: dependencies, awaited jobs, results ---------------------------------
        #: Why completions see every edge: an enqueue that adds a dependent to a live job first
        #: sets that job's ``watched`` flag (``watch_live``, a row lock held to its commit). A
        #: completion of that job either ran first (the enqueue's UPDATE waits, finds the row
        #: gone, and its next statement reads the outcome in history: ``lookup_finished``) or
        #: waits for the enqueue's commit and re-checks ``NOT watched`` on the new row version,
        #: so the job finishes through ``finish_watched``, whose following statements
        #: (``release_mark``...) take fresh snapshots that see the new edges and dependents.
        #:
        #: Mark ``ids`` (live jobs) watched; returns those that are live. Locks their rows until
        #: commit (a completion of one of them waits).
        self.watch_live = q("""
            UPDATE {s}.jobs SET watched = true
             WHERE id = ANY(%(ids)s::bigint[]) RETURNING id""")
        #: The final outcome of jobs no longer live: ``succeeded``/``cancelled`` (with the
        #: result) from history, ``failed`` from the archive. A plain read.
        self.lookup_finished = q("""
            SELECT id, state, result::text FROM {s}.job_history
             WHERE id = ANY(%(ids)s::bigint[])
            UNION ALL
            SELECT id, 'failed', NULL FROM {s}.failed_jobs WHERE id = ANY(%(ids)s::bigint[])""")
        #: Insert the jobs of a workflow batch (ids reserved by ``reserve_ids``) with their state
        #: (``blocked`` while ``deps_left`` > 0 or their results are still to be gathered) and
        #: ``watched`` (others in the batch depend on them). Locks nothing but the new rows.
        self.insert_flow_jobs = q("""
            INSERT INTO {s}.jobs (id, queue, task, args, priority, max_attempts, run_at,
                                  timeout_s, meta, concurrency_key, state, deps_left, watched)
            SELECT * FROM unnest(%(ids)s::bigint[], %(queues)s::text[], %(tasks)s::text[],
                                 %(args)s::jsonb[], %(priorities)s::smallint[],
                                 %(max_attempts)s::int[], %(run_ats)s::timestamptz[],
                                 %(timeouts)s::float8[], %(metas)s::jsonb[],
                                 %(concurrency_keys)s::text[], %(states)s::text[],
                                 %(deps_left)s::int[], %(watched)s::bool[])""")
        #: Insert dependency edges (an edge to an already finished job carries its outcome).
        self.insert_edges = q("""
            INSERT INTO {s}.job_deps (job_id, dep_id, policy, arg, pos, awaited, outcome, result)
            SELECT * FROM unnest(%(job_ids)s::bigint[], %(dep_ids)s::bigint[],
                                 %(policies)s::text[], %(args)s::text[], %(positions)s::int[],
                                 %(awaited)s::bool[], %(outcomes)s::text[],
                                 %(results)s::jsonb[])""")
        #: Record which jobs a workflow enqueued.
        self.insert_workflow_jobs = q("""
            INSERT INTO {s}.workflow_jobs (workflow_id, job_id, pos)
            SELECT %(workflow)s, id, pos
              FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS t(id, pos)""")
        #: Release step 1: these jobs finished (``states``: succeeded/cancelled/failed, with
        #: their results). Their edges record the outcome; each blocked dependent's
        #: ``deps_left`` goes down by the edges that count as done (a success, or any outcome
        #: under policy ``run``), under the dependent's row lock -- two dependencies finishing
        #: at once decrement one after the other, on the newest row version. Returns each
        #: dependent touched: (id, deps_left now, whether a dependency failed against its
        #: policy, the policy). Also wakes ``app.result`` waiters (``{done}`` channel).
        self.release_mark = q("""
            WITH r AS (
                SELECT * FROM unnest(%(ids)s::bigint[], %(states)s::text[],
                                     %(results)s::jsonb[]) AS r(id, state, result)),
            n AS (SELECT pg_notify({done}, r.id::text) FROM r),
            e AS (
                UPDATE {s}.job_deps e SET outcome = r.state, result = r.result
                  FROM r WHERE e.dep_id = r.id AND e.outcome IS NULL
                RETURNING e.job_id, e.policy, e.outcome),
            a AS (
                SELECT job_id, min(policy) AS policy,
                       count(*) FILTER (WHERE outcome = 'succeeded' OR policy = 'run') AS ok,
                       bool_or(outcome <> 'succeeded' AND policy <> 'run') AS bad
                  FROM e GROUP BY job_id),
            u AS (
                UPDATE {s}.jobs j SET deps_left = j.deps_left - a.ok
                  FROM a WHERE j.id = a.job_id AND j.state = 'blocked'
                RETURNING j.id, j.deps_left, a.bad, a.policy)
            SELECT id, deps_left, bad, policy FROM u
            UNION ALL SELECT NULL, NULL, NULL, NULL FROM n""")
        #: Release step 2: blocked jobs whose dependencies all finished become waiting. Their
        #: arguments receive the dependencies' results (``arg``, in ``pos`` order for a list),
        #: awaited jobs' outcomes go into ``meta.awaited``. This statement's snapshot is taken
        #: after step 1 got the row locks, so it sees every edge other completions recorded.
        self.release_ready = q("""
            WITH u AS (
                UPDATE {s}.jobs j
                   SET state = 'waiting', run_at = greatest(j.run_at, now()),
                       args = j.args || coalesce(x.args, '{{}}'::jsonb),
                       meta = CASE WHEN x.awaited IS NULL THEN j.meta
                                   ELSE j.meta || jsonb_build_object('awaited', x.awaited) END
                  FROM unnest(%(ids)s::bigint[]) AS r(id)
                  CROSS JOIN LATERAL (
                      SELECT (SELECT jsonb_object_agg(g.arg, g.v) FROM (
                                  SELECT e.arg,
                                         CASE WHEN bool_and(e.pos IS NULL)
                                              THEN (array_agg(e.result))[1]
                                              ELSE jsonb_agg(e.result ORDER BY e.pos) END AS v
                                    FROM {s}.job_deps e
                                   WHERE e.job_id = r.id AND e.arg IS NOT NULL
                                     AND NOT e.awaited
                                   GROUP BY e.arg) g) AS args,
                             (SELECT jsonb_object_agg(e.dep_id::text, jsonb_build_object(
                                         'state', e.outcome, 'result', e.result))
                                FROM {s}.job_deps e
                               WHERE e.job_id = r.id AND e.awaited) AS awaited) x
                 WHERE j.id = r.id AND j.state = 'blocked' AND j.deps_left <= 0
                RETURNING j.id, j.queue)
            SELECT id, pg_notify({chan}, queue) FROM u""")
        #: Release step 3a: dependents whose dependency failed or was cancelled, under policy
        #: ``cancel``: to history as cancelled (with an error record saying why). Returns their
        #: ids: their own dependents are released next, in the same transaction.
        self.release_cancel = q("""
            WITH d AS (
                DELETE FROM {s}.jobs WHERE id = ANY(%(ids)s::bigint[]) AND state = 'blocked'
                RETURNING *)
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, enqueued_at, started_at)
            SELECT id, queue, task, args, priority, 'cancelled', attempt, max_attempts,
                   errors || jsonb_build_array(jsonb_build_object(
                       'attempt', attempt, 'error', %(reason)s::text, 'traceback', NULL,
                       'at', now())),
                   created_at, started_at FROM d
            RETURNING id""")
        #: Release step 3b: the same under policy ``fail``: to the archive with ``reason``.
        self.release_fail = q("""
            WITH d AS (
                DELETE FROM {s}.jobs WHERE id = ANY(%(ids)s::bigint[]) AND state = 'blocked'
                RETURNING *)
            INSERT INTO {s}.failed_jobs (id, queue, task, args, priority, attempt, max_attempts,
                                         unique_key, timeout_s, meta, errors, reason,
                                         enqueued_at, started_at)
            SELECT id, queue, task, args, priority, attempt, max_attempts, unique_key,
                   timeout_s, meta, errors || jsonb_build_array(jsonb_build_object(
                       'attempt', attempt, 'error', %(reason)s::text, 'traceback', NULL,
                       'at', now())),
                   %(reason)s, created_at, started_at FROM d
            ON CONFLICT (id) DO UPDATE SET errors = excluded.errors, reason = excluded.reason,
                                           failed_at = now()
            RETURNING id""")
        #: Park a running job that awaits others (:class:`pgqueue.Await`): blocked, its attempt
        #: given back, its lease dropped, ``deps_left`` jobs to wait for; its earlier await
        #: edges are dropped (``meta.awaited`` shows the newest round). Same ownership guard as
        #: every outcome. Locks its row.
        self.park = q("""
            WITH old AS (
                DELETE FROM {s}.job_deps WHERE job_id = %(id)s AND awaited),
            u AS (
                UPDATE {s}.jobs
                   SET state = 'blocked', attempt = attempt - 1, worker_id = NULL,
                       lease_expires_at = NULL, deps_left = %(deps_left)s,
                       meta = meta - 'awaited'
                 WHERE id = %(id)s AND state = {running} AND worker_id = %(worker)s
                   AND attempt = coalesce(%(attempt)s::int, attempt)
                RETURNING id)
            SELECT id FROM u""")
        #: Where a job is now, for ``app.result``: mark it watched if live (its completion then
        #: notifies ``{done}``), else read its final outcome. One row: (state, result, error).
        self.watch_result = q("""
            WITH w AS (
                UPDATE {s}.jobs SET watched = true WHERE id = %(id)s RETURNING state)
            SELECT state, NULL, NULL FROM w
            UNION ALL
            (SELECT state, result::text, errors -> -1 ->> 'error' FROM {s}.job_history
              WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM w)
              ORDER BY finished_at DESC LIMIT 1)
            UNION ALL
            SELECT 'failed', NULL, reason FROM {s}.failed_jobs
             WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM w)""")
        #: Listen for completions of watched jobs (payload: the job id).
        self.listen_done = q("LISTEN {done_ident}")
        #: Every job of a workflow with its state, in workflow order (a plain read).
        self.workflow_state = q("""
            SELECT job_id, task, state, started_at, finished_at, last_error
              FROM {s}.workflow_jobs_state WHERE workflow_id = %(workflow)s ORDER BY pos""")
        #: A durable step's checkpoint (a plain read), and its write: a second writer of the
        #: same (job, name) inserts nothing and reads the first one's row.
        self.get_step = q("""
            SELECT fn, result::text FROM {s}.job_steps WHERE job_id = %(id)s AND name = %(name)s""")
        self.put_step = q("""
            INSERT INTO {s}.job_steps (job_id, name, fn, result)
            VALUES (%(id)s, %(name)s, %(fn)s, %(result)s::jsonb)
            ON CONFLICT (job_id, name) DO NOTHING""")

        # ---- worker: outcomes -------------------------------------------------------------
        #: Move finished jobs (succeeded or cancelled) into history in one statement. Rows no
        #: longer owned by this worker (rescued meanwhile) are left alone.
        #:
        #: ``ids`` must be sorted, smallest first (the driver sorts the batch): each row's place
        #: in the batch is found by ``width_bucket`` (a binary search), and its attempt, state
        #: and result read from the arrays at that place. No join with the batch: joined to an
        #: ``unnest`` of it, the planner expected one row of ``jobs`` and matched each row it
        #: found against every row of the batch (a join filter, 10,000 comparisons for 100
        #: jobs), or, without ``j.id = ANY(ids)``, read all of a small ``jobs`` table. Now the
        #: plan is one scan of ``jobs_pkey`` whatever the statistics say (see ``running``).
        self.finish_many = q("""
            WITH d AS (
                DELETE FROM {s}.jobs j
                WHERE j.id = ANY(%(ids)s::bigint[])
                  AND j.state = {running} AND j.worker_id = %(worker)s
                  AND j.attempt = coalesce(
                      (%(attempts)s::int[])[width_bucket(j.id, %(ids)s::bigint[])], j.attempt)
                  AND NOT j.watched
                RETURNING j.*, width_bucket(j.id, %(ids)s::bigint[]) AS pos)
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, result, worker_id, enqueued_at,
                                         started_at)
            SELECT id, queue, task, args, priority, (%(states)s::text[])[pos], attempt,
                   max_attempts, errors, (%(results)s::jsonb[])[pos], worker_id, created_at,
                   started_at FROM d
            RETURNING id""")
        #: ``finish_many`` leaves *watched* jobs alone (``NOT j.watched``, re-checked on the
        #: newest row version when an enqueue of a dependent or a result waiter updated the
        #: row meanwhile): a job with dependents or waiters finishes here instead, in a
        #: transaction whose next statements (``release_*``) release its dependents. Returns
        #: each finished job's outcome and result for them.
        self.finish_watched = q("""
            WITH r AS (
                SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[],
                                     %(results)s::jsonb[]) AS r(id, attempt, state, result)),
            d AS (
                DELETE FROM {s}.jobs j USING r
                WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = r.id
                  AND j.state = 'running' AND j.worker_id = %(worker)s
                  AND j.attempt = coalesce(r.attempt, j.attempt)
                RETURNING j.*, r.state AS final_state, r.result),
            h AS (
                INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                             max_attempts, errors, result, worker_id,
                                             enqueued_at, started_at)
                SELECT id, queue, task, args, priority, final_state, attempt, max_attempts,
                       errors, result, worker_id, created_at, started_at FROM d)
            SELECT id, final_state, result::text FROM d""")

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
                 WHERE id = ANY(%(ids)s::bigint[]) AND state = {running}
                   AND worker_id = %(worker)s
                   FOR UPDATE SKIP LOCKED)
            UPDATE {s}.jobs j SET lease_expires_at = now() + make_interval(secs => %(lease)s)
              FROM h WHERE j.id = h.id""")

        self.register_worker = q("""
            INSERT INTO {s}.workers (id, host, pid, queues, concurrency)
            VALUES (%(worker)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()""")
        self.unregister_worker = q("DELETE FROM {s}.workers WHERE id = %(worker)s")

        #: Jobs whose lease expired go back to waiting, or one of them is quarantined: the rescue
        #: rule of :mod:`pgqueue.job` (``rescue_counts``, ``rescue_quarantines``), in one
        #: statement.
        #:
        #: - ``c`` locks the expired rows ``FOR UPDATE SKIP LOCKED``: two rescuers never touch the
        #:   same job, and a live worker's heartbeat keeps its leases in the future, so its jobs
        #:   are never rescued (served by ``jobs_running_lease_idx``).
        #: - ``h``, ``e`` and ``v`` are the verdict on each, read before anything changes:
        #:   ``prime`` (its ``rescues`` is the highest among the jobs its worker holds, and no
        #:   other has it: one pass over the running rows of the workers concerned, only when
        #:   something expired), ``died`` (evidence the job was running when its worker went: the
        #:   worker has not heartbeated since the lease expired; a live worker that did not list
        #:   the job -- a lost claim answer -- was not running it), the quarantine test, and
        #:   ``rank``: the job's place among the jobs rescued from that dead worker,
        #:   most-rescued last.
        #: - quarantined jobs move to ``failed_jobs`` with ``qreason`` (``{n}``: the count);
        #:   the others go back to waiting at ``now() + rank * spread`` seconds (a dead worker's
        #:   jobs come back apart, so they are not claimed together again), ``rescues + died``.
        #:   The claim counted the attempt, and it stays counted (the outcome guard needs one
        #:   number per claim), but no job is archived for want of attempts by a rescue.
        #:
        #: Every rescue appends an error record with ``reason`` (``RESCUE_REASON``) in the stored
        #: shape of :class:`pgqueue.job.AttemptError`, with the dead worker's id.
        self.rescue_expired = q("""
            WITH c AS (
                SELECT id, worker_id FROM {s}.jobs
                WHERE state = 'running' AND lease_expires_at < now()
                ORDER BY lease_expires_at
                LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED),
            h AS (  -- the prime suspect of each worker: the one highest count, unshared
                SELECT o.id,
                       o.rescues = max(o.rescues) OVER (PARTITION BY o.worker_id)
                       AND count(*) OVER (PARTITION BY o.worker_id, o.rescues) = 1 AS prime
                  FROM {s}.jobs o
                 WHERE o.state = 'running'
                   AND o.worker_id IN (SELECT worker_id FROM c)),
            e AS (
                SELECT j.id, j.worker_id, j.rescues, h.prime,
                       NOT EXISTS (SELECT 1 FROM {s}.workers w
                                    WHERE w.id = j.worker_id
                                      AND w.heartbeat_at >= j.lease_expires_at) AS died
                  FROM {s}.jobs j JOIN c ON j.id = c.id JOIN h ON h.id = c.id),
            v AS (
                SELECT id, died, rescues,
                       died AND rescues + 1 >= %(after)s
                            AND (prime OR rescues + 1 >= 2 * %(after)s) AS quarantine,
                       CASE WHEN died THEN row_number() OVER (
                                PARTITION BY worker_id, died ORDER BY rescues, id) - 1
                            ELSE 0 END AS rank
                  FROM e),
            dead AS (
                DELETE FROM {s}.jobs j USING v
                WHERE j.id = v.id AND v.quarantine
                RETURNING j.*),
            arch AS (
                INSERT INTO {s}.failed_jobs (id, queue, task, args, priority, attempt,
                                             max_attempts, unique_key, timeout_s, meta, errors,
                                             reason, enqueued_at, started_at)
                SELECT id, queue, task, args, priority, attempt, max_attempts, unique_key,
                       timeout_s, meta, errors || jsonb_build_array(jsonb_build_object(
                           'attempt', attempt, 'error', %(reason)s::text,
                           'traceback', NULL, 'at', now(), 'worker', worker_id)),
                       replace(%(qreason)s::text, '{{n}}', (rescues + 1)::text),
                       created_at, started_at FROM dead
                ON CONFLICT (id) DO UPDATE SET
                    attempt = excluded.attempt, errors = excluded.errors,
                    reason = excluded.reason, failed_at = now()
                RETURNING id),
            back AS (
                UPDATE {s}.jobs j
                   SET state = 'waiting', worker_id = NULL, lease_expires_at = NULL,
                       run_at = now() + make_interval(secs => v.rank * %(spread)s),
                       rescues = j.rescues + v.died::int,
                       errors = j.errors || jsonb_build_array(jsonb_build_object(
                           'attempt', j.attempt, 'error', %(reason)s::text,
                           'traceback', NULL, 'at', now(), 'worker', j.worker_id)),
                       last_error = %(reason)s::text
                  FROM v WHERE j.id = v.id AND NOT v.quarantine
                RETURNING j.id, pg_notify({chan}, j.queue))
            SELECT 'rescued', id FROM back UNION ALL SELECT 'failed', id FROM arch""")

        #: Remove registry rows of workers that stopped heartbeating.
        self.prune_workers = q("""
            DELETE FROM {s}.workers
             WHERE heartbeat_at < now() - make_interval(secs => %(older_than)s)""")

        #: The queues served by workers whose heartbeat is younger than ``max_age`` seconds
        #: (``pgqueue status --check``). Reads the small ``workers`` table; locks nothing.
        self.live_worker_queues = q("""
            SELECT DISTINCT unnest(queues) FROM {s}.workers
             WHERE heartbeat_at >= now() - make_interval(secs => %(max_age)s)""")

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

        #: Time travel for tests (:mod:`pgqueue.testing`): bring the future waiting jobs of
        #: ``queues`` forward by ``by`` (an interval), never earlier than now. ``kind`` picks
        #: ``'scheduled'`` (never attempted nor snoozed), ``'retries'`` (waiting after a failed
        #: attempt or a snooze) or ``'all'``. Locks only the waiting rows it moves (a claim
        #: skips them meanwhile: SKIP LOCKED); running jobs are not touched.
        self.advance_waiting = q("""
            WITH u AS (
                UPDATE {s}.jobs
                   SET run_at = CASE WHEN run_at <= now() + %(by)s THEN now()
                                     ELSE run_at - %(by)s END
                 WHERE queue = ANY(%(queues)s::text[]) AND state = 'waiting' AND run_at > now()
                   AND (%(kind)s::text = 'all'
                        OR (%(kind)s::text = 'retries') = (attempt > 0 OR snoozes > 0))
                RETURNING 1)
            SELECT count(*) FROM u""")

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
                DELETE FROM {s}.jobs WHERE id = %(id)s AND state IN ('waiting', 'blocked')
                RETURNING *)
            INSERT INTO {s}.job_history (id, queue, task, args, priority, state, attempt,
                                         max_attempts, errors, enqueued_at, started_at)
            SELECT id, queue, task, args, priority, 'cancelled', attempt, max_attempts, errors,
                   created_at, started_at FROM d
            RETURNING id""")
        self.cancel_running = q("""
            WITH u AS (
                UPDATE {s}.jobs SET cancel_requested = true
                WHERE id = %(id)s AND state = {running} RETURNING id, worker_id)
            SELECT id, pg_notify({ctl}, json_build_object('op', 'cancel', 'id', id,
                                                          'worker', worker_id)::text) FROM u""")
        self.cancel_requested = q("""
            SELECT id FROM {s}.jobs
             WHERE state = 'running' AND worker_id = %(worker)s AND cancel_requested""")
        #: The same among the jobs the worker holds (its cancel poll, every few seconds), read
        #: by id through ``jobs_pkey`` (``{running}``): the running index would walk the
        #: entries of every job that finished since a held snapshot was taken.
        self.cancel_requested_ids = q("""
            SELECT id FROM {s}.jobs
             WHERE id = ANY(%(ids)s::bigint[]) AND state = {running}
               AND worker_id = %(worker)s AND cancel_requested""")

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
            SELECT v.queue, v.paused, v.waiting, v.scheduled, v.running, v.failed,
                   v.finished_last_hour, v.failed_last_hour, v.oldest_wait_s,
                   v.mean_run_time_s, v.concurrency, v.key_concurrency, v.rate_limit,
                   v.rate_period_s, v.slots_in_use, v.rate_used, v.waiting_for_limit,
                   p.key_rate_limit, p.key_rate_period_s
              FROM {s}.queue_stats v LEFT JOIN {s}.queues p ON p.name = v.queue
             ORDER BY v.queue""")
        #: Dead row versions in ``jobs`` (claims and completions leave one each) as the
        #: statistics see them; they decide when a worker vacuums (see ``vacuum_jobs``).
        #: The jobs table's dead and live rows (the statistics collector's counts), the pages
        #: its planner statistics assume (``pg_class.relpages``) and the pages it has now (its
        #: file's size: the collector's counts can lag by seconds, the file does not).
        self.jobs_dead_tuples = sql.SQL("""
            SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0), c.relpages,
                   pg_relation_size(c.oid) / current_setting('block_size')::int
              FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
             WHERE c.oid = to_regclass({table})""").format(table=sql.Literal(f"{schema}.jobs"))
        # One vacuuming worker at a time per schema: the ``vacuum`` lease (``acquire_lease``),
        # not a session advisory lock -- VACUUM cannot run in a transaction, so a
        # transaction-scoped lock cannot cover it, and behind a transaction pooler a session
        # lock and its unlock may land on two different server sessions (the lock then stays).
        #: Claimed and finished jobs leave dead entries at the front of the claim index; until a
        #: vacuum removes them every claim steps over them, so a large backlog drains slower and
        #: slower. Autovacuum may be off, or too slow for a queue (its naptime is a minute).
        self.vacuum_jobs = q("VACUUM (TRUNCATE false) {s}.jobs")
        #: Fresh planner statistics for ``jobs``; it also makes every session plan its cached
        #: statements on ``jobs`` again (see ``vacuum_if_needed`` in the driver).
        self.analyze_jobs = q("ANALYZE {s}.jobs")
        self.ensure_partitions = q("SELECT {s}.ensure_history_partitions(%(days)s)")
        self.drop_history_before = q("SELECT {s}.drop_history_before(%(cutoff)s)")
        self.version = q("SELECT version_num FROM {s}.pgqueue_alembic_version")

    def copy_jobs(self, optional: tuple[str, ...] = COPY_OPTIONAL) -> sql.Composed:
        """Bulk path for large batches without unique keys: ``COPY jobs (<COPY_COLUMNS>,
        <optional>) FROM STDIN`` (text format), composed once per column list. A column of
        :data:`COPY_OPTIONAL` that no row of the batch needs is left out, and the server fills
        it from the table's default: ``run_at`` ``now()`` (the transaction's clock, the value
        the client would have sent for a job without delay), ``meta`` ``'{}'``, ``timeout_s``
        and ``concurrency_key`` NULL. Parsing a timestamp and a jsonb per row was a fifth of
        the server's COPY. Takes ROW EXCLUSIVE on ``jobs``, like an INSERT."""
        hit = self._copy_jobs.get(optional)
        if hit is None:
            unknown = set(optional) - set(COPY_OPTIONAL)
            if unknown:
                raise ValueError(f"not an optional COPY column: {sorted(unknown)}")
            hit = self._copy_jobs[optional] = sql.SQL("COPY {s}.jobs ({cols}) FROM STDIN").format(
                s=sql.Identifier(self.schema),
                cols=sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS + optional)))
        return hit

    def claim_one(self, limit: int) -> sql.Composed:
        """The claim of up to ``limit`` jobs of one queue (parameters: ``queue``, ``after_p``,
        ``after_r``, ``after_i``, ``limit``, ``worker``, ``lease``)."""
        return self._variant(self._claim_one_text, bound=claim_bound(limit))

    def claim_many(self, limit: int, queues: int) -> sql.Composed:
        """The claim of up to ``limit`` jobs of ``queues`` queues (``queues`` and the
        ``after_*`` parameters as arrays, one element per queue)."""
        return self._variant(self._claim_many_text, bound=claim_bound(limit), queues=queues)

    def next_run_at(self, queues: int) -> sql.Composed:
        """When the next waiting job of ``queues`` (unpaused) queues is due, each read after
        its key (``queues``, ``after_p``, ``after_r``, ``after_i``: arrays of that length)."""
        return self._variant(self._next_run_at_text, queues=queues)

    def _variant(self, text: str, *, bound: int = 0, queues: int = 0) -> sql.Composed:
        """``text`` with the numbers the planner must see written in (``{bound}``,
        ``{queues}``), composed once per distinct value: a few statements, each prepared."""
        key = (text, bound, queues)
        stmt = self._variants.get(key)
        if stmt is None:
            stmt = self._variants[key] = sql.SQL(text).format(
                bound=sql.Literal(bound), queues=sql.Literal(queues), **self._formats)
        return stmt


@cache
def statements(schema: str) -> Statements:
    """The cached statements of a schema."""
    return Statements(schema)


# ---- the dashboard's reads (pgqueue.dashboard) ----------------------------------------------
#: JIT off for the rest of the transaction (the dashboard's reads: planned costs far above
#: ``jit_above_cost``, compile times far above run times). Locks nothing.
SET_LOCAL_JIT_OFF = sql.Composed([sql.SQL("SELECT set_config('jit', 'off', true)")])

#: The names of :class:`DashboardStatements` (what ``PostgresDriver.inspect_async`` may run).
DASHBOARD_READS = ("overview", "limited_stats", "throughput", "estimates", "queue_known",
                   "live_jobs", "history_jobs", "failed_jobs", "failed_ids", "job_detail",
                   "workers")


class DashboardStatements:
    """The web dashboard's read statements for one schema (build with
    :func:`dashboard_statements`). All are plain reads under READ COMMITTED: they lock nothing
    and wait for nothing. None counts a big table: listings are keyset-paginated (``LIMIT``
    after a ``(time, id)`` or ``id`` cursor) and table sizes are the planner's estimates.

    Every filter applies when its parameter is not NULL; ``args`` is JSON containment
    (``args @> %(args)s``)."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)

        def q(text: str, **parts: sql.Composable) -> sql.Composed:
            return sql.SQL(text).format(s=s, **parts)

        common = """
               (%(queue)s::text IS NULL OR queue = %(queue)s)
           AND (%(task)s::text IS NULL OR task = %(task)s)
           AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)"""

        def distinct_queues(cte: str, table: str, where: str) -> sql.Composed:
            """The body of the recursive CTE ``cte``: the distinct ``queue`` values of the rows
            of ``table`` matching ``where``, by a loose index scan (one probe of an index
            leading with ``queue`` per value, however many rows each has)."""
            return q("""
                (SELECT queue FROM {s}.{t} WHERE {w} ORDER BY queue LIMIT 1)
                UNION ALL
                SELECT nx.queue FROM {cte}, LATERAL (
                    SELECT queue FROM {s}.{t} WHERE {w} AND queue > {cte}.queue
                     ORDER BY queue LIMIT 1) nx""", t=sql.Identifier(table),
                     cte=sql.Identifier(cte), w=sql.SQL(where))

        def per_minute(queues: str, table: str, at: str) -> sql.Composed:
            """The rows of ``table`` whose ``at`` falls in the minute ``m.minute``, counted
            up to ``cap + 1``: a range of the ``(queue, at)`` index per queue of the CTE
            ``queues``, stopped once ``cap + 1`` rows are found."""
            return q("""
                SELECT count(*) FROM (
                    SELECT 1 FROM {qs} CROSS JOIN LATERAL (
                        SELECT 1 FROM {s}.{t} x
                         WHERE x.queue = {qs}.queue AND x.{at} >= m.minute
                           AND x.{at} < m.minute + interval '1 minute'
                         LIMIT %(cap)s + 1) x
                     LIMIT %(cap)s + 1) c""", qs=sql.Identifier(queues),
                     t=sql.Identifier(table), at=sql.Identifier(at))

        def unkeyed(run_at: str) -> sql.Composed:
            """The jobs of queue ``n.queue`` without a concurrency key whose ``run_at``
            matches ``run_at``, counted up to ``cap + 1``: per priority of the CTE ``pq``,
            a range of ``jobs_claim_idx``, stopped once ``cap + 1`` rows are found."""
            return q("""
                SELECT count(*) FROM (
                    SELECT 1 FROM pq CROSS JOIN LATERAL (
                        SELECT 1 FROM {s}.jobs j
                         WHERE j.queue = pq.queue AND j.priority = pq.priority
                           AND j.state = 'waiting' AND j.concurrency_key IS NULL
                           AND j.run_at {run_at}
                         ORDER BY j.run_at LIMIT %(cap)s + 1) x
                     WHERE pq.queue = n.queue LIMIT %(cap)s + 1) c""", run_at=sql.SQL(run_at))

        keyed_queues = distinct_queues(
            "kq", "jobs", "state = 'waiting' AND concurrency_key IS NOT NULL")
        failed_queues = distinct_queues("fq", "failed_jobs", "true")
        history_queues = distinct_queues("hq", "job_history", "true")

        #: The overview's per-queue figures, each bounded so that its cost does not grow with
        #: the tables (``queue_stats`` counts every row; ``pgqueue status`` reads it). Every
        #: count reads at most ``cap + 1`` index entries, so a count above ``cap`` is known
        #: only to be above it (the dashboard shows "10,000+"); below it, it is exact and
        #: equals the view's. Index probes only, except the running jobs and the mean run time:
        #:
        #: - the queues: loose index scans (one probe per distinct value) of the claim
        #:   indexes, of ``failed_jobs`` and of ``job_history`` (all of it: a time bound would
        #:   make a probe walk the old rows of the DEFAULT partition), with ``queues`` and the
        #:   queues of the running jobs read; a queue known only from history is listed when
        #:   it finished a job in the last hour (as in the view). Queues holding only
        #:   ``blocked`` jobs are not found (they are in no claim index).
        #: - jobs without a concurrency key: a loose scan of ``jobs_claim_idx`` yields each
        #:   (queue, priority); per priority, ``run_at <= now()`` (waiting) and ``> now()``
        #:   (scheduled) are index ranges, counted lazily up to ``cap + 1`` per queue, and the
        #:   first entry of the waiting range is that priority's oldest.
        #: - keyed jobs (``jobs_key_claim_idx``, ordered by key first): waiting and scheduled
        #:   are counted among the queue's first ``cap + 1`` entries (exact below the cap,
        #:   lower bounds above it); the oldest wait comes from a loose scan of the queue's
        #:   first ``groups`` (key, priority) groups, whose first entries are their oldest (one
        #:   more group probed says whether the oldest wait is only a lower bound).
        #: - running: the first ``cap + 1`` running rows (``jobs_running_lease_idx`` and the
        #:   heap, where ``queue`` is), grouped; ``running_read`` above ``cap`` means the
        #:   per-queue figures are lower bounds.
        #: - failed (all, last hour) and finished in the last hour: ranges of the ``(queue,
        #:   failed_at)`` and ``(queue, finished_at)`` indexes, up to ``cap + 1``; the mean
        #:   run time is that of the queue's newest ``sample`` jobs finished in the last hour
        #:   (their heap rows: ``started_at`` is in no index).
        #:
        #: Columns: queue, paused, waiting and scheduled without a key (up to cap + 1), keyed
        #: waiting, keyed scheduled, keyed entries read, running, running rows read (all
        #: queues), failed, failed in the last hour, finished in the last hour, oldest wait
        #: (seconds), key groups probed, mean run time (seconds).
        self.overview = q("""
            WITH RECURSIVE
            pq(queue, priority) AS (
                (SELECT queue, priority FROM {s}.jobs
                  WHERE state = 'waiting' AND concurrency_key IS NULL
                  ORDER BY queue, priority LIMIT 1)
                UNION ALL
                SELECT nx.queue, nx.priority FROM pq, LATERAL (
                    SELECT queue, priority FROM {s}.jobs
                     WHERE state = 'waiting' AND concurrency_key IS NULL
                       AND (queue, priority) > (pq.queue, pq.priority)
                     ORDER BY queue, priority LIMIT 1) nx),
            kq(queue) AS ({keyed_queues}),
            fq(queue) AS ({failed_queues}),
            hq(queue) AS ({history_queues}),
            r AS MATERIALIZED (
                SELECT queue FROM {s}.jobs WHERE state = 'running' LIMIT %(cap)s + 1),
            rq AS (SELECT queue, count(*) AS running FROM r GROUP BY queue),
            n AS (
                SELECT queue, bool_or(listed) AS listed FROM (
                    SELECT queue, true AS listed FROM pq
                    UNION ALL SELECT queue, true FROM kq
                    UNION ALL SELECT queue, true FROM rq
                    UNION ALL SELECT queue, true FROM fq
                    UNION ALL SELECT name, true FROM {s}.queues
                    UNION ALL SELECT queue, false FROM hq) a
                 GROUP BY queue)
            SELECT n.queue, coalesce(q.paused, false), w.waiting, w.scheduled,
                   k.waiting, k.scheduled, k.read, coalesce(rq.running, 0),
                   (SELECT count(*) FROM r), f.failed, f.hour, h.finished,
                   extract(epoch FROM now() - least(w.oldest, ko.oldest))::float8,
                   ko.groups, h.mean_run
              FROM n
              LEFT JOIN {s}.queues q ON q.name = n.queue
              LEFT JOIN rq ON rq.queue = n.queue
              CROSS JOIN LATERAL (
                  SELECT ({waiting}) AS waiting, ({scheduled}) AS scheduled,
                         (SELECT min(o.run_at) FROM pq CROSS JOIN LATERAL (
                              SELECT j.run_at FROM {s}.jobs j
                               WHERE j.queue = pq.queue AND j.priority = pq.priority
                                 AND j.state = 'waiting' AND j.concurrency_key IS NULL
                                 AND j.run_at <= now()
                               ORDER BY j.run_at LIMIT 1) o
                           WHERE pq.queue = n.queue) AS oldest) w
              CROSS JOIN LATERAL (
                  SELECT count(*) FILTER (WHERE x.run_at <= now()) AS waiting,
                         count(*) FILTER (WHERE x.run_at > now()) AS scheduled,
                         count(*) AS read
                    FROM (SELECT j.run_at FROM {s}.jobs j
                           WHERE j.queue = n.queue AND j.state = 'waiting'
                             AND j.concurrency_key IS NOT NULL LIMIT %(cap)s + 1) x) k
              CROSS JOIN LATERAL (
                  WITH RECURSIVE g(ckey, priority, run_at, depth) AS (
                      (SELECT concurrency_key, priority, run_at, 1 FROM {s}.jobs
                        WHERE queue = n.queue AND state = 'waiting'
                          AND concurrency_key IS NOT NULL
                        ORDER BY concurrency_key, priority, run_at LIMIT 1)
                      UNION ALL
                      SELECT nx.*, g.depth + 1 FROM g, LATERAL (
                          SELECT concurrency_key, priority, run_at FROM {s}.jobs
                           WHERE queue = n.queue AND state = 'waiting'
                             AND concurrency_key IS NOT NULL
                             AND (concurrency_key, priority) > (g.ckey, g.priority)
                           ORDER BY concurrency_key, priority, run_at LIMIT 1) nx)
                  SELECT min(x.run_at) FILTER (
                             WHERE x.run_at <= now() AND x.depth <= %(groups)s) AS oldest,
                         count(*) AS groups
                    FROM (SELECT run_at, depth FROM g LIMIT %(groups)s + 1) x) ko
              CROSS JOIN LATERAL (
                  SELECT (SELECT count(*) FROM (
                             SELECT 1 FROM {s}.failed_jobs x WHERE x.queue = n.queue
                              LIMIT %(cap)s + 1) c) AS failed,
                         (SELECT count(*) FROM (
                             SELECT 1 FROM {s}.failed_jobs x
                              WHERE x.queue = n.queue AND x.failed_at > now() - interval '1 hour'
                              LIMIT %(cap)s + 1) c) AS hour) f
              CROSS JOIN LATERAL (
                  SELECT (SELECT count(*) FROM (
                             SELECT 1 FROM {s}.job_history x
                              WHERE x.queue = n.queue
                                AND x.finished_at > now() - interval '1 hour'
                              LIMIT %(cap)s + 1) c) AS finished,
                         (SELECT avg(extract(epoch FROM x.finished_at - x.started_at))::float8
                            FROM (SELECT x.finished_at, x.started_at FROM {s}.job_history x
                                   WHERE x.queue = n.queue
                                     AND x.finished_at > now() - interval '1 hour'
                                     AND x.started_at IS NOT NULL
                                   ORDER BY x.finished_at DESC LIMIT %(sample)s) x) AS mean_run
              ) h
             WHERE n.listed OR h.finished > 0
             ORDER BY n.queue""", keyed_queues=keyed_queues, failed_queues=failed_queues,
                          history_queues=history_queues, waiting=unkeyed("<= now()"),
                          scheduled=unkeyed("> now()"))

        #: The ``queue_stats`` rows of the queues that have a flow-control limit.
        self.limited_stats = q("""
            SELECT queue, concurrency, key_concurrency, rate_limit, rate_period_s,
                   slots_in_use, rate_used, waiting_for_limit
              FROM {s}.queue_stats
             WHERE queue IN (SELECT name FROM {s}.queues
                              WHERE concurrency IS NOT NULL OR key_concurrency IS NOT NULL
                                 OR rate_limit IS NOT NULL)
             ORDER BY queue""")

        #: Finished (succeeded or cancelled) and failed jobs per minute over the last hour, one
        #: row per minute (zeros included), oldest first, each count bounded at ``cap + 1``
        #: (above ``cap`` a minute is known only to be above it). Per minute and queue (the
        #: queues by loose index scans, as in ``overview``) a range of the ``(queue,
        #: finished_at)`` index of the history partitions the minute falls in, and of ``(queue,
        #: failed_at)``: no row outside the last hour is read (where grouping the last hour by
        #: minute scanned today's partitions whole).
        self.throughput = q("""
            WITH RECURSIVE
            hq(queue) AS ({history_queues}),
            fq(queue) AS ({failed_queues}),
            m(minute) AS (
                SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                                       date_trunc('minute', now()), interval '1 minute'))
            SELECT m.minute,
                   ({finished}), ({failed})
              FROM m ORDER BY m.minute""", history_queues=history_queues,
                            failed_queues=failed_queues,
                            finished=per_minute("hq", "job_history", "finished_at"),
                            failed=per_minute("fq", "failed_jobs", "failed_at"))

        #: The planner's row estimates of the three job tables (``pg_class.reltuples``; the
        #: partitions of ``job_history`` summed). Reads the catalog only.
        self.estimates = sql.SQL("""
            SELECT c.relname, greatest(c.reltuples, 0)::bigint
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = {name} AND c.relname IN ('jobs', 'failed_jobs')
            UNION ALL
            SELECT 'job_history', coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = to_regclass({history})""").format(
            name=sql.Literal(schema), history=sql.Literal(f"{schema}.job_history"))

        #: Whether pgqueue knows a queue (a row in ``queues``, a live, archived or finished job):
        #: each probe stops at the first row found (indexes on ``queue`` serve the last three).
        self.queue_known = q("""
            SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE name = %(queue)s)
                OR EXISTS (SELECT 1 FROM {s}.jobs WHERE queue = %(queue)s)
                OR EXISTS (SELECT 1 FROM {s}.failed_jobs WHERE queue = %(queue)s)
                OR EXISTS (SELECT 1 FROM {s}.job_history WHERE queue = %(queue)s)""")

        #: A page of live jobs, newest id first, after the cursor ``before_id``; ``state`` is
        #: waiting (ready now), scheduled (waiting, later) or running.
        self.live_jobs = q("""
            SELECT id, queue, task, args,
                   CASE WHEN state = 'waiting' AND run_at > now() THEN 'scheduled'
                        ELSE state END,
                   attempt, max_attempts, created_at, run_at, started_at, worker_id,
                   last_error, priority
              FROM {s}.jobs
             WHERE {common}
               AND (%(state)s::text IS NULL
                    OR (%(state)s = 'waiting' AND state = 'waiting' AND run_at <= now())
                    OR (%(state)s = 'scheduled' AND state = 'waiting' AND run_at > now())
                    OR (%(state)s = 'running' AND state = 'running'))
               AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
               AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
             ORDER BY id DESC LIMIT %(limit)s""", common=sql.SQL(common))

        #: A page of finished jobs, newest id first, after the cursor ``before_id``. By id, not
        #: by ``finished_at``: each daily partition's primary key (id, finished_at) then serves
        #: the order (a merge of backward index scans that stops after ``limit`` rows), where
        #: no index leads with ``finished_at`` (ordering by it sorts the whole history).
        self.history_jobs = q("""
            SELECT id, queue, task, args, state, attempt, max_attempts, enqueued_at,
                   started_at, finished_at, worker_id,
                   extract(epoch FROM finished_at - started_at)::float8,
                   extract(epoch FROM coalesce(started_at, finished_at) - enqueued_at)::float8
              FROM {s}.job_history
             WHERE {common}
               AND (%(state)s::text IS NULL OR state = %(state)s)
               AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
               AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
             ORDER BY id DESC LIMIT %(limit)s""", common=sql.SQL(common))

        failed_filter = common + """
           AND (%(since)s::timestamptz IS NULL OR failed_at >= %(since)s)
           AND (%(until)s::timestamptz IS NULL OR failed_at < %(until)s)"""
        #: A page of archived jobs, newest first, after the cursor (``before_at``, ``before_id``).
        self.failed_jobs = q("""
            SELECT id, queue, task, args, attempt, max_attempts, reason, enqueued_at,
                   started_at, failed_at, errors -> -1 ->> 'error'
              FROM {s}.failed_jobs
             WHERE {filter}
               AND (%(before_at)s::timestamptz IS NULL
                    OR (failed_at, id) < (%(before_at)s, %(before_id)s::bigint))
             ORDER BY failed_at DESC, id DESC LIMIT %(limit)s""", filter=sql.SQL(failed_filter))
        #: The ids of the archived jobs that match a filter (at most ``limit``): what "retry all
        #: matching" re-drives.
        self.failed_ids = q("""
            SELECT id FROM {s}.failed_jobs WHERE {filter}
             ORDER BY id LIMIT %(limit)s""", filter=sql.SQL(failed_filter))

        #: One job by id wherever it is (live, finished or archived), as one row: where, the
        #: job, its options as a JSON object and its timeline. Probes each table by primary key.
        self.job_detail = q("""
            SELECT 'live', id, queue, task, args,
                   CASE WHEN state = 'waiting' AND run_at > now() THEN 'scheduled'
                        ELSE state END,
                   attempt, max_attempts, errors, NULL::jsonb, worker_id, created_at, run_at,
                   started_at, NULL::timestamptz, NULL::text,
                   jsonb_build_object('priority', priority, 'unique_key', unique_key,
                                      'timeout_s', timeout_s, 'meta', meta,
                                      'concurrency_key', concurrency_key,
                                      'cancel_requested', cancel_requested,
                                      'lease_expires_at', lease_expires_at,
                                      'snoozes', snoozes, 'rescues', rescues)
              FROM {s}.jobs WHERE id = %(id)s
            UNION ALL
            (SELECT 'history', id, queue, task, args, state, attempt, max_attempts, errors,
                    result, worker_id, enqueued_at, NULL, started_at, finished_at, NULL,
                    jsonb_build_object('priority', priority)
               FROM {s}.job_history WHERE id = %(id)s ORDER BY finished_at DESC LIMIT 1)
            UNION ALL
            SELECT 'failed', id, queue, task, args, 'failed', attempt, max_attempts, errors,
                   NULL, NULL, enqueued_at, NULL, started_at, failed_at, reason,
                   jsonb_build_object('priority', priority, 'unique_key', unique_key,
                                      'timeout_s', timeout_s, 'meta', meta)
              FROM {s}.failed_jobs WHERE id = %(id)s""")

        #: The registered workers with their heartbeat age and the jobs each is running (count
        #: and the first 20 ids), the running jobs grouped once, not looked up per worker: the
        #: first ``cap + 1`` of them (``jobs_running_lease_idx`` and their heap rows, where
        #: ``worker_id`` is), as the overview reads them; the last column is how many were
        #: read (above ``cap``, each worker's count is a lower bound).
        self.workers = q("""
            WITH rr AS MATERIALIZED (
                SELECT worker_id, id FROM {s}.jobs WHERE state = 'running'
                 LIMIT %(cap)s + 1),
            r AS (
                SELECT worker_id, count(*) AS n, (array_agg(id ORDER BY id))[1:20] AS ids
                  FROM rr GROUP BY worker_id)
            SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at,
                   extract(epoch FROM now() - w.heartbeat_at)::float8, coalesce(r.n, 0), r.ids,
                   (SELECT count(*) FROM rr)
              FROM {s}.workers w LEFT JOIN r ON r.worker_id = w.id
             ORDER BY w.heartbeat_at DESC, w.id""")

    def get(self, name: str) -> sql.Composed:
        """The statement called ``name`` (one of :data:`DASHBOARD_READS`)."""
        if name not in DASHBOARD_READS:
            raise KeyError(f"no dashboard statement {name!r}")
        found: sql.Composed = getattr(self, name)
        return found


@cache
def dashboard_statements(schema: str) -> DashboardStatements:
    """The cached dashboard statements of a schema."""
    return DashboardStatements(schema)
