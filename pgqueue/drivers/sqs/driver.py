"""The Amazon SQS driver: a thin layer over standard SQS queues (boto3).

Needs the ``sqs`` extra (``pip install 'pgqueue-tx[sqs]'``). Tested against an SQS emulator
(moto in server mode), not against AWS.

Mapping (``<p>`` is the ``queue_prefix``; a pgqueue queue name is spelled in SQS's alphabet --
letters, digits, ``-``, ``_`` -- by escaping ``_ . : /`` as ``__ _o _c _s``)::

    <p><queue>          one standard SQS queue per pgqueue queue: its waiting, delayed and
                        running jobs (one message per job, the job as JSON in the body)
    <p><queue>_f        its dead-letter queue: the failed archive (the job, its errors, the
                        reason and when it failed)

Queues are **created on first use** (enqueue, claim; reads never create): the credentials need
``sqs:CreateQueue`` then, or pass ``create_queues=False`` to require them to exist (a missing
queue is then a :class:`pgqueue.ConfigurationError` naming it).

- enqueue: ``SendMessageBatch`` (10 per call), ``DelaySeconds`` for ``delay``/``run_at``
  (rounded up to whole seconds, at most 900);
- claim: ``ReceiveMessage`` with the lease as the visibility timeout (1.5 times the lease,
  as the other drivers rescue within 1.5 leases; whole seconds, at least 1); the attempt is
  the message's ``ApproximateReceiveCount`` plus the attempts counted before this copy of the
  job was sent (stored in the body);
- heartbeat: ``ChangeMessageVisibility`` to a fresh lease;
- complete: ``DeleteMessage``;
- retry: ``ChangeMessageVisibility`` to the backoff (SQS allows up to 12 h from the receive; a
  longer backoff is cut to what is left, with a warning);
- snooze and the release at shutdown (attempt given back): a new copy of the message (with the
  attempts counted so far) then ``DeleteMessage`` of the old one;
- archive (the handler's last attempt failed, or the job's leases expired until its attempts
  were used up: its worker died or stalled holding it): ``SendMessage`` to the dead-letter queue
  with the error, then ``DeleteMessage``;
- counts: ``ApproximateNumberOfMessages`` (waiting), ``...Delayed`` (scheduled),
  ``...NotVisible`` (running, or waiting out a retry backoff);
- clear: ``PurgeQueue``;
- the failed archive (list, get, re-drive, purge, count): a scan of the dead-letter queue that
  receives every message, then deletes, re-sends or releases each.

Limits, declared in :attr:`SqsDriver.capabilities` (:class:`pgqueue.App` refuses what the
driver cannot do with a :class:`pgqueue.CapabilityError` naming the limit):

- no priorities (SQS does not order by priority; nor strictly by age, standard queues): a
  priority other than the default 20 is refused; no delays over 900 s (15 min, SQS's
  ``DelaySeconds`` limit); a message over 256 KiB (``max_message_bytes``) is refused with a
  :class:`pgqueue.ValidationError`. Nothing of a batch is sent when one job is refused.
- no transactional enqueue or completion; no unique keys; no pause shared by the workers; no
  lookup or cancel of a job by id; no history of finished jobs.
- counts are SQS's approximate ones; a job in its retry backoff counts as running.
- only the last attempt's error is kept (a message's body cannot change when it is retried);
  errors recorded before a snooze or a re-drive are kept.
- a job can now and then be delivered to two workers at once (SQS standard queues deliver at
  least once: ``exclusive_claims=False``); handlers should be idempotent.
- expired leases are not rescued by pgqueue: SQS makes the message visible again by itself
  (``rescue=False``); a job whose receives use up its attempts is archived at its next claim.
- ``clear`` (``PurgeQueue``) also deletes the running jobs' messages (their completion is then a
  no-op); AWS allows one purge per queue every 60 s.
- a batch of more than 10 jobs is several calls: if one fails, the jobs of the earlier calls
  are sent (the error says how many). Delivery is at least once (SQS standard queues).
- the failed-archive scan hides the dead-letter messages it reads for ``scan_hold_s`` seconds
  (30): run one archive operation at a time.
- job ids are made by the driver (milliseconds since 2020, 10 random bits per driver instance,
  a counter): increasing within a process, unique across processes with high probability.

Async methods run the blocking boto3 client in a thread (``asyncio.to_thread``); the
queue-control twins are generated from the sync forms (:func:`~pgqueue.drivers.base.async_twin`).
boto3 errors are translated at this boundary: endpoint unreachable ->
:class:`pgqueue.DatabaseUnavailableError`, missing region or credentials ->
:class:`pgqueue.ConfigurationError`, anything else -> :class:`pgqueue.DatabaseError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

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
)
from pgqueue.errors import (
    CapabilityError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    DriverError,
    PgQueueError,
    ValidationError,
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

__all__ = ["MAX_DELAY_S", "MAX_MESSAGE_BYTES", "SqsDriver"]

log = logging.getLogger("pgqueue.sqs")
T = TypeVar("T")

#: SQS's longest ``DelaySeconds`` (15 minutes)
MAX_DELAY_S = 900
#: SQS's message size limit this driver checks against (256 KiB)
MAX_MESSAGE_BYTES = 262_144
#: SQS's longest visibility timeout (12 hours)
MAX_VISIBILITY_S = 43_200
#: entries per SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch call
BATCH = 10
#: how long messages are kept (SQS's maximum, 14 days)
RETENTION_S = 1_209_600
#: the dead-letter queue's name suffix (never produced by the name escaping)
DLQ_SUFFIX = "_f"
_ESCAPES = {"_": "__", ".": "_o", ":": "_c", "/": "_s"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{0,40}")
_SQS_NAME_MAX = 80
_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z


def _import_boto3() -> tuple[Any, Any, Any]:
    """(boto3, botocore.config, botocore.exceptions)."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DriverError("the sqs driver needs boto3: pip install 'pgqueue-tx[sqs]'") from exc
    return boto3, botocore.config, botocore.exceptions


def sqs_queue_name(prefix: str, queue: str) -> str:
    """The SQS name of pgqueue queue ``queue`` (``_ . : /`` escaped as ``__ _o _c _s``)."""
    return prefix + "".join(_ESCAPES.get(c, c) for c in queue)


def parse_sqs_name(prefix: str, name: str) -> tuple[str, bool] | None:
    """(pgqueue queue, is the dead-letter queue) of an SQS queue name; None if not ours."""
    if not name.startswith(prefix):
        return None
    rest, out, i = name[len(prefix):], [], 0
    while i < len(rest):
        c = rest[i]
        if c != "_":
            out.append(c)
            i += 1
            continue
        code = rest[i + 1:i + 2]
        if code == DLQ_SUFFIX[1] and i + 2 == len(rest):
            return ("".join(out), True) if out else None
        if code not in _UNESCAPES:
            return None
        out.append(_UNESCAPES[code])
        i += 2
    return ("".join(out), False) if out else None


def _visibility(lease_s: float) -> int:
    """The visibility timeout of a lease: the lease and half of it again (whole seconds, 1 s to
    12 h). The other drivers' rescuer runs every half lease, so an expired lease is rescued
    within 1.5 leases there too; a stalled heartbeat then does not put a running job back at
    once."""
    return max(1, min(MAX_VISIBILITY_S, math.ceil(lease_s * 1.5)))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms_to_dt(ms: int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class _Ids:
    """Job ids: milliseconds since 2020 (<< 22), 10 random bits per instance, a 12-bit counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._node = secrets.randbits(10)
        self._last = 0
        self._seq = 0

    def next(self) -> int:
        with self._lock:
            ms = max(_now_ms() - _EPOCH_MS, self._last)
            if ms == self._last:
                self._seq += 1
                if self._seq >= 4096:
                    ms, self._seq = ms + 1, 0
            else:
                self._seq = 0
            self._last = ms
            return (ms << 22) | (self._node << 12) | self._seq


@dataclass(slots=True)
class _Held:
    """A message this driver received for a worker: what its outcome needs."""

    url: str
    receipt: str
    worker_id: str
    attempt: int
    body: dict[str, Any]
    received: float  # time.monotonic() of the receive


@dataclass(slots=True)
class _Dead:
    """A dead-letter message held by an archive scan."""

    url: str
    receipt: str
    body: dict[str, Any]


def _foreign_body(message_id: str, queue: str, raw: str) -> dict[str, Any]:
    """A body for a message pgqueue did not write (its id derived from the SQS message id)."""
    job_id = int(hashlib.sha256(message_id.encode()).hexdigest()[:15], 16) or 1
    return {"id": job_id, "queue": queue, "task": "(not a pgqueue message)", "args": "{}",
            "meta": "{}", "max_attempts": 1, "created_at": _now_ms(), "run_at": _now_ms(),
            "base": 0, "snoozes": 0, "errors": [], "raw": raw[:10_000]}


def _job(body: dict[str, Any], attempt: int, state: str, decode_error: str | None = None,
         ) -> Job:
    args, bad_args = decode_stored(body.get("args"), "args")
    meta, bad_meta = decode_stored(body.get("meta"), "meta")
    return Job(id=int(body["id"]), queue=body["queue"], task=body["task"], args=args,
               attempt=attempt, max_attempts=int(body["max_attempts"]),
               run_at=_ms_to_dt(body["run_at"]), created_at=_ms_to_dt(body["created_at"]),
               timeout_s=body.get("timeout_s"), errors=attempt_errors(body.get("errors")),
               meta=meta, state=state, decode_error=decode_error or bad_args or bad_meta,
               snoozes=int(body.get("snoozes", 0)))


def _failed(body: dict[str, Any]) -> FailedJob:
    return FailedJob(id=int(body["id"]), queue=body["queue"], task=body["task"],
                     args=decode_stored(body.get("args"))[0], priority=20,
                     attempt=int(body["attempt"]), max_attempts=int(body["max_attempts"]),
                     errors=attempt_errors(body.get("errors")), reason=body["reason"],
                     enqueued_at=_ms_to_dt(body["created_at"]),
                     failed_at=_ms_to_dt(body["failed_at"]))


class SqsDriver(NoDatabaseMixin):
    """Amazon SQS driver (see the module docstring for the mapping and its limits).

    Args:
        region: the AWS region (``us-east-1``...); default: boto3's own configuration
            (``AWS_REGION``, ``~/.aws/config``); required by boto3 one way or the other.
        endpoint_url: another SQS endpoint (LocalStack, moto, ElasticMQ:
            ``http://localhost:4566``); default: AWS's.
        queue_prefix: put before every SQS queue name (up to 40 letters, digits, ``-``,
            ``_``; default ``"pgqueue-"``): one prefix per application keeps queues apart.
        create_queues: create a missing queue (and its dead-letter queue) on first use
            (default True); False: a missing queue is a :class:`pgqueue.ConfigurationError`.
        aws_access_key_id / aws_secret_access_key / aws_session_token: credentials; default:
            boto3's chain (environment, profile, instance role).
        wait_time_s: SQS long polling (``WaitTimeSeconds``, 0-20) of claims and archive scans;
            default 0. On AWS, short polling may miss messages of a sparse queue: use 1-20.
        max_message_bytes: the largest message sent (default 262,144: SQS's classic 256 KiB).
        scan_hold_s: seconds an archive scan hides the dead-letter messages it reads (30).
        connect_timeout / read_timeout: seconds per connection / per answer (default 5 / 30).

    Example::

        SqsDriver(region="eu-west-1", queue_prefix="shop-")
        SqsDriver(region="us-east-1", endpoint_url="http://localhost:4566")   # LocalStack
    """

    name = "sqs"
    capabilities = Capabilities(
        transactional_enqueue=False,
        transactional_completion=False,
        cross_process=True,
        push_wakeups=False,
        history=False,
        priorities=False,
        delays=True,
        max_delay_s=float(MAX_DELAY_S),
        shared_pause=False,
        job_lookup=False,
        unique_keys=False,
        exact_counts=False,
        attempt_errors=False,
        rescue=False,
        clear_spares_running=False,
        fifo=False,
        exclusive_claims=False,
    )

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 queue_prefix: str = "pgqueue-", create_queues: bool = True,
                 aws_access_key_id: str | None = None, aws_secret_access_key: str | None = None,
                 aws_session_token: str | None = None, wait_time_s: int = 0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, scan_hold_s: int = 30,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        boto3, config_mod, self._exc = _import_boto3()
        if not isinstance(queue_prefix, str) or not _PREFIX_RE.fullmatch(queue_prefix):
            raise ConfigurationError(f"invalid queue_prefix {queue_prefix!r}: use up to 40 "
                                     "letters, digits, '-' and '_' (SQS's alphabet)",
                                     key="sqs queue_prefix")
        if endpoint_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?",
                                                          endpoint_url):
            raise ConfigurationError(f"invalid SQS endpoint {endpoint_url!r}: use "
                                     "http(s)://host[:port]", key="sqs endpoint")
        if not 0 <= wait_time_s <= 20:
            raise ConfigurationError("wait_time_s must be 0-20 (SQS's WaitTimeSeconds)",
                                     key="sqs wait_time_s")
        if not 1024 <= max_message_bytes <= MAX_MESSAGE_BYTES * 4:
            raise ConfigurationError("max_message_bytes must be 1,024-1,048,576",
                                     key="sqs max_message_bytes")
        self.region = region
        self.endpoint_url = endpoint_url
        self.queue_prefix = queue_prefix
        self.create_queues = create_queues
        self.wait_time_s = int(wait_time_s)
        self.max_message_bytes = max_message_bytes
        self.scan_hold_s = int(scan_hold_s)
        try:
            self._client = boto3.session.Session().client(
                "sqs", region_name=region, endpoint_url=endpoint_url,
                aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                config=config_mod.Config(connect_timeout=connect_timeout,
                                         read_timeout=read_timeout,
                                         retries={"max_attempts": 3, "mode": "standard"}))
        except self._exc.NoRegionError as exc:
            raise ConfigurationError("no AWS region: pass region= (backend.queue.sqs.region) "
                                     "or set AWS_REGION", key="sqs region") from exc
        self._ids = _Ids()
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._held: dict[int, _Held] = {}
        #: job id -> (queue, when its retry backoff ends): for next_run_at in this process
        self._backoff: dict[int, tuple[str, float]] = {}
        self._rotate = 0

    def __repr__(self) -> str:
        where = self.endpoint_url or f"aws {self.region or '(default region)'}"
        return f"<pgqueue.SqsDriver {where} prefix={self.queue_prefix!r}>"

    # ---- plumbing ------------------------------------------------------------------------
    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Map botocore errors to pgqueue's hierarchy at the driver boundary."""
        exc = self._exc
        try:
            yield
        except PgQueueError:
            raise
        except (exc.EndpointConnectionError, exc.ConnectTimeoutError, exc.ReadTimeoutError,
                exc.ConnectionClosedError) as e:
            raise DatabaseUnavailableError(f"SQS at {self.endpoint_url or 'AWS'} does not "
                                           f"answer: {e}") from e
        except exc.NoCredentialsError as e:
            raise ConfigurationError("no AWS credentials: configure boto3's chain (environment, "
                                     "profile, role) or pass aws_access_key_id/"
                                     "aws_secret_access_key", key="sqs credentials") from e
        except exc.NoRegionError as e:
            raise ConfigurationError("no AWS region: pass region= or set AWS_REGION",
                                     key="sqs region") from e
        except exc.ClientError as e:
            err = e.response.get("Error", {})
            raise DatabaseError(f"SQS error {err.get('Code', '?')}: "
                                f"{err.get('Message', e)}") from e
        except exc.BotoCoreError as e:
            raise DatabaseError(f"SQS error: {e}") from e

    def _call(self, op: str, **kwargs: Any) -> Any:
        with self._translate():
            return getattr(self._client, op)(**kwargs)

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking client code in a thread (so do the generated async twins)."""
        return await asyncio.to_thread(fn, *args)

    def _name(self, queue: str, dead: bool = False) -> str:
        name = sqs_queue_name(self.queue_prefix, queue) + (DLQ_SUFFIX if dead else "")
        if len(sqs_queue_name(self.queue_prefix, queue)) + len(DLQ_SUFFIX) > _SQS_NAME_MAX:
            raise ValidationError(f"queue {queue!r} is too long for SQS: its SQS name "
                                  f"{name!r} (with the prefix, escapes and the dead-letter "
                                  f"suffix) must fit in SQS's {_SQS_NAME_MAX} characters")
        return name

    def _url(self, queue: str, *, dead: bool = False, create: bool = False) -> str | None:
        """The URL of ``queue``'s SQS queue (or its dead-letter queue); created with its
        dead-letter queue when ``create`` (and ``create_queues``); None when missing."""
        name = self._name(queue, dead)
        url = self._urls.get(name)
        if url is not None:
            return url
        try:
            url = str(self._client.get_queue_url(QueueName=name)["QueueUrl"])
        except self._exc.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" not in code and "QueueDoesNotExist" not in code:
                with self._translate():
                    raise
            if not create:
                return None
            if not self.create_queues:
                raise ConfigurationError(
                    f"SQS queue {name!r} does not exist and create_queues is off: create it "
                    f"(and {self._name(queue, True)!r}) or pass create_queues=True",
                    key="sqs queue") from e
            url = self._create(queue, dead)
        except Exception:
            with self._translate():
                raise
        self._urls[name] = url
        return url

    def _create(self, queue: str, dead: bool) -> str:
        attributes = {"MessageRetentionPeriod": str(RETENTION_S), "VisibilityTimeout": "30"}
        urls = {}
        for is_dead in (True, False):  # the dead-letter queue first: archives never fail
            name = self._name(queue, is_dead)
            urls[is_dead] = str(self._call("create_queue", QueueName=name,
                                           Attributes=attributes)["QueueUrl"])
            self._urls[name] = urls[is_dead]
        return urls[dead]

    def _need(self, queue: str, dead: bool = False) -> str:
        url = self._url(queue, dead=dead, create=True)
        assert url is not None
        return url

    def _attrs(self, queue: str, dead: bool = False) -> dict[str, int] | None:
        """The approximate counts of ``queue``'s SQS queue; None when it does not exist."""
        url = self._url(queue, dead=dead)
        if url is None:
            return None
        got = self._call("get_queue_attributes", QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return {"waiting": int(got.get("ApproximateNumberOfMessages", 0)),
                "running": int(got.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "scheduled": int(got.get("ApproximateNumberOfMessagesDelayed", 0))}

    def _send(self, url: str, entries: Sequence[tuple[str, int]]) -> None:
        """Send ``(body, delay seconds)`` messages, 10 per call; raises naming how many of
        them were sent when SQS refuses one."""
        sent = 0
        for start in range(0, len(entries), BATCH):
            chunk = entries[start:start + BATCH]
            answer = self._call("send_message_batch", QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": body, "DelaySeconds": delay}
                for i, (body, delay) in enumerate(chunk)])
            failed = answer.get("Failed") or []
            sent += len(chunk) - len(failed)
            if failed:
                raise DatabaseError(f"SQS refused {len(failed)} message(s) "
                                    f"({failed[0].get('Code')}: {failed[0].get('Message')}); "
                                    f"{sent} of {len(entries)} were sent")

    def _change(self, url: str, items: Sequence[tuple[str, int]]) -> None:
        """``ChangeMessageVisibility`` of ``(receipt, seconds)``, 10 per call (a receipt that
        expired meanwhile is skipped: the message is visible again already)."""
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            answer = self._call("change_message_visibility_batch", QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": s}
                for i, (r, s) in enumerate(chunk)])
            for f in answer.get("Failed") or []:
                log.warning("SQS could not change a message's visibility: %s",
                            f.get("Message"))

    def _delete(self, url: str, receipts: Sequence[str]) -> int:
        """``DeleteMessage`` of ``receipts``, 10 per call; how many were deleted."""
        return len(self._deleted(url, receipts))

    def _deleted(self, url: str, receipts: Sequence[str]) -> set[int]:
        """``DeleteMessage`` of ``receipts``, 10 per call; the indexes of those deleted."""
        done: set[int] = set()
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start:start + BATCH]
            answer = self._call("delete_message_batch", QueueUrl=url, Entries=[
                {"Id": str(start + i), "ReceiptHandle": r} for i, r in enumerate(chunk)])
            done.update(int(e["Id"]) for e in answer.get("Successful") or [])
        return done

    def _receive(self, url: str, n: int, visibility: int) -> list[dict[str, Any]]:
        answer = self._call("receive_message", QueueUrl=url, MaxNumberOfMessages=min(BATCH, n),
                            VisibilityTimeout=visibility, WaitTimeSeconds=self.wait_time_s,
                            AttributeNames=["ApproximateReceiveCount"])
        return list(answer.get("Messages") or [])

    def _body_of(self, queue: str, message: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The job body of a message, or a stand-in (and why) for one pgqueue did not write."""
        raw = message.get("Body", "")
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and isinstance(body.get("id"), int) and "task" in body:
                return body, None
        except ValueError:
            pass
        return (_foreign_body(message["MessageId"], queue, raw),
                "not a pgqueue job message (written by another program?)")

    def _encode(self, body: dict[str, Any]) -> str:
        text = json.dumps(body, separators=(",", ":"))
        size = len(text.encode())
        if size > self.max_message_bytes:
            raise ValidationError(
                f"job {body['id']} of task {body['task']!r}: its SQS message would be "
                f"{size:,} bytes, over SQS's message size limit of {self.max_message_bytes:,} "
                "bytes (256 KiB); keep large payloads elsewhere (S3, a database) and enqueue "
                "a reference")
        return text

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Nothing to close (boto3 keeps a connection pool per client; jobs stay in SQS)."""

    async def aclose(self) -> None:
        self.close()

    def check(self) -> None:
        """List this prefix's queues: raises a clear error when SQS is unreachable or refuses
        the credentials."""
        self._call("list_queues", QueueNamePrefix=self.queue_prefix or "p", MaxResults=1)

    # ---- enqueue -------------------------------------------------------------------------
    def _delay_of(self, job: NewJob, now_ms: int) -> tuple[int, int]:
        """(DelaySeconds, run_at in ms) of a new job; CapabilityError beyond 900 s."""
        if job.run_at is not None:
            run_ms = int(job.run_at.timestamp() * 1000)
        else:
            run_ms = now_ms + int(max(0.0, job.delay_s or 0.0) * 1000)
        wait = max(0, math.ceil((run_ms - now_ms) / 1000))
        if wait > MAX_DELAY_S + 1:  # a second of slack: the App checked it a moment ago
            raise CapabilityError(f"the sqs driver cannot delay a job by {wait} s: SQS delays "
                                  f"are at most {MAX_DELAY_S} s (15 minutes); use the postgres "
                                  "driver for longer delays")
        return min(wait, MAX_DELAY_S), run_ms

    def insert_many(self, jobs: Sequence[NewJob], *, conn: Any = None) -> list[int]:
        """Send jobs, 10 per call; ids in input order. Every message is built and checked
        (size, delay) before anything is sent. (``conn`` is never given: :class:`pgqueue.App`
        refuses it for this driver.)"""
        if not jobs:
            return []
        now = _now_ms()
        ids: list[int] = []
        by_queue: dict[str, list[tuple[str, int]]] = {}
        for j in jobs:
            self._name(j.queue)  # its SQS name fits
            delay, run_ms = self._delay_of(j, now)
            job_id = self._ids.next()
            body = {"id": job_id, "queue": j.queue, "task": j.task, "args": j.args_json,
                    "meta": j.meta_json, "max_attempts": j.max_attempts,
                    "timeout_s": j.timeout_s, "created_at": now, "run_at": run_ms,
                    "base": 0, "snoozes": 0, "errors": []}
            by_queue.setdefault(j.queue, []).append((self._encode(body), delay))
            ids.append(job_id)
        for queue, entries in by_queue.items():
            self._send(self._need(queue), entries)
        return ids

    insert_many_async = async_twin(insert_many)

    # ---- worker --------------------------------------------------------------------------
    def _claim(self, queues: Sequence[str], limit: int, worker_id: str,
               lease_s: float) -> list[Job]:
        names = list(dict.fromkeys(queues))
        self._rotate = (self._rotate + 1) % len(names)
        names = names[self._rotate:] + names[:self._rotate]  # no queue starves the others
        visibility = _visibility(lease_s)
        out: list[Job] = []
        for queue in names:
            if len(out) >= limit:
                break
            url = self._need(queue)
            for message in self._receive(url, limit - len(out), visibility):
                job = self._take(queue, url, message, worker_id)
                if job is not None:
                    out.append(job)
        return out

    def _take(self, queue: str, url: str, message: dict[str, Any],
              worker_id: str) -> Job | None:
        """The job of a received message, held for ``worker_id``; None when its attempts
        were used up by expired leases (it is archived instead)."""
        body, foreign = self._body_of(queue, message)
        received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        attempt = int(body.get("base", 0)) + received
        held = _Held(url, message["ReceiptHandle"], worker_id, attempt, body, time.monotonic())
        job_id = int(body["id"])
        with self._lock:
            self._held[job_id] = held
            self._backoff.pop(job_id, None)
        if attempt > int(body["max_attempts"]) and foreign is None:
            lost = held.attempt = attempt - 1  # the attempts that ran (none completed)
            error = AttemptError.now(lost, RESCUE_REASON)
            self._archive(job_id, worker_id, error,
                          f"attempts used up: its lease expired {lost} time(s) without an "
                          f"outcome (its worker died or stalled) and max_attempts is "
                          f"{body['max_attempts']}", lost)
            return None
        return _job(body, attempt, "running", foreign)

    async def claim(self, queues: Sequence[str], limit: int, *, worker_id: str,
                    lease_s: float) -> list[Job]:
        """Receive up to ``limit`` messages of ``queues`` (no priority order: SQS's own),
        invisible to others for 1.5 ``lease_s`` (whole seconds, at least 1)."""
        if limit < 1 or not queues:
            return []
        return await self._offload(self._claim, queues, limit, worker_id, lease_s)

    def _mine(self, job_id: int, worker_id: str, attempt: int | None) -> _Held | None:
        """The held message of ``job_id`` if ``worker_id`` holds it (at ``attempt``), taken
        out of the held set."""
        with self._lock:
            held = self._held.get(job_id)
            if held is None or held.worker_id != worker_id or (
                    attempt is not None and held.attempt != attempt):
                return None
            return self._held.pop(job_id)

    def _finish(self, items: Sequence[Finish], worker_id: str) -> list[int]:
        by_url: dict[str, list[tuple[int, str]]] = {}
        for item in items:
            held = self._mine(item.job_id, worker_id, item.attempt)
            if held is not None:
                by_url.setdefault(held.url, []).append((item.job_id, held.receipt))
        out = []
        for url, pairs in by_url.items():  # a batch call per 10 jobs of a queue
            done = self._deleted(url, [receipt for _, receipt in pairs])
            out += [job_id for i, (job_id, _) in enumerate(pairs) if i in done]
        return out

    async def finish_many(self, items: Sequence[Finish], *, worker_id: str) -> list[int]:
        """Delete the messages of jobs ``worker_id`` holds (at each item's claimed
        ``attempt``, if given); returns their ids. No history is kept."""
        if not items:
            return []
        return await self._offload(self._finish, items, worker_id)

    def _resend(self, held: _Held, *, delay_s: float, base: int, snooze: bool,
                max_attempts: int) -> None:
        """A new copy of a held job (attempts counted so far: ``base``), then delete the old
        one (a failure in between leaves both: at least once)."""
        if delay_s > MAX_DELAY_S + 1:
            raise CapabilityError(f"the sqs driver cannot put a job back for {delay_s:.0f} s: "
                                  f"SQS delays are at most {MAX_DELAY_S} s (15 minutes)")
        body = {**held.body, "base": base, "max_attempts": max_attempts,
                "snoozes": int(held.body.get("snoozes", 0)) + (1 if snooze else 0),
                "run_at": _now_ms() + int(delay_s * 1000)}
        self._send(held.url, [(self._encode(body), min(MAX_DELAY_S, math.ceil(delay_s)))])
        self._delete(held.url, [held.receipt])

    def _requeue(self, items: Sequence[Requeue], worker_id: str) -> list[int]:
        out = []
        for item in items:
            held = self._mine(item.job_id, worker_id, item.attempt)
            if held is None:
                continue
            delay = max(0.0, item.delay_s)
            stored = int(held.body["max_attempts"])
            raised = max(stored, item.max_attempts or 0)
            if not item.count_attempt:  # snooze, release: give the attempt back
                self._resend(held, delay_s=delay, base=held.attempt - 1, snooze=item.snooze,
                             max_attempts=raised)
            elif raised > stored:  # a retry allowed more attempts: a copy that says so
                self._resend(held, delay_s=delay, base=held.attempt, snooze=False,
                             max_attempts=raised)
            else:  # a retry: the message stays, invisible for the backoff
                left = MAX_VISIBILITY_S - int(time.monotonic() - held.received) - 1
                seconds = math.ceil(delay)
                if seconds > left:
                    log.warning("job %s: retry backoff %.0f s is cut to %d s (SQS keeps a "
                                "message invisible at most 12 h after it was received)",
                                item.job_id, delay, left)
                    seconds = max(0, left)
                self._change(held.url, [(held.receipt, seconds)])
                with self._lock:
                    self._backoff[item.job_id] = (held.body["queue"], time.time() + seconds)
            out.append(item.job_id)
        return out

    async def requeue_many(self, items: Sequence[Requeue], *, worker_id: str) -> list[int]:
        """Put held jobs back: a retry keeps the message invisible for its backoff (the
        attempt counts); a snooze or release sends a new copy with the attempt given back, as
        does a retry that raises ``max_attempts`` (a backoff of up to 900 s then).
        ``Requeue.error`` is not stored (SQS messages cannot change; only the archive keeps
        an error)."""
        if not items:
            return []
        return await self._offload(self._requeue, items, worker_id)

    def _archive(self, job_id: int, worker_id: str, error: AttemptError, reason: str,
                 attempt: int | None) -> bool:
        held = self._mine(job_id, worker_id, attempt)
        if held is None:
            return False
        body = {**held.body, "attempt": held.attempt, "reason": reason,
                "errors": [*held.body.get("errors", []), error.to_json()],
                "failed_at": _now_ms()}
        text = json.dumps(body, separators=(",", ":"), default=str)
        if len(text.encode()) > self.max_message_bytes:  # a huge error: keep the job instead
            last = body["errors"][-1]
            last["traceback"] = None
            last["error"] = str(last["error"])[:2000]
            body["reason"] = str(reason)[:2000]
            text = json.dumps(body, separators=(",", ":"), default=str)
        self._send(self._need(held.body["queue"], dead=True), [(text, 0)])
        self._delete(held.url, [held.receipt])
        return True

    async def archive(self, job_id: int, *, worker_id: str, error: AttemptError,
                      reason: str, attempt: int | None = None) -> bool:
        """Move a held job to its queue's dead-letter queue with ``error`` appended to the
        errors it carries, and ``reason``."""
        return await self._offload(self._archive, job_id, worker_id, error, reason, attempt)

    def _next_run_at(self, queues: Sequence[str]) -> dt.datetime | None:
        now = time.time()
        names = set(queues)
        with self._lock:
            for job_id, (_, due) in list(self._backoff.items()):
                if due < now - 30:  # claimed elsewhere long ago
                    del self._backoff[job_id]
            dues = [due for q, due in self._backoff.values() if q in names]
        for queue in dict.fromkeys(queues):
            counts = self._attrs(queue)
            if counts is None:
                continue
            if counts["waiting"]:
                return _ms_to_dt(now * 1000)
            if counts["scheduled"]:
                dues.append(now + 1.0)  # SQS does not say when: look again in a second
        if not dues:
            return None
        return _ms_to_dt(max(min(dues), now + 0.05) * 1000)

    async def next_run_at(self, queues: Sequence[str], *,
                          worker_id: str | None = None) -> dt.datetime | None:
        """Now when ``queues`` have visible messages; else the end of a retry backoff this
        process started, or in a second when messages are delayed; None otherwise."""
        return await self._offload(self._next_run_at, queues)

    async def now(self) -> dt.datetime:
        """This host's clock (SQS has no clock to ask)."""
        return dt.datetime.now(dt.UTC)

    async def register_worker(self, *, worker_id: str, queues: Sequence[str],
                              concurrency: int) -> None:
        """Nothing to record: SQS has no worker registry."""

    async def unregister_worker(self, *, worker_id: str) -> None:
        """Forget what ``worker_id`` held in this process (its messages become visible when
        their leases end)."""
        with self._lock:
            for job_id in [i for i, h in self._held.items() if h.worker_id == worker_id]:
                del self._held[job_id]

    def _heartbeat(self, worker_id: str, lease_s: float, job_ids: Sequence[int] | None) -> None:
        seconds = _visibility(lease_s)
        wanted = None if job_ids is None else set(job_ids)
        by_url: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            for job_id, held in self._held.items():
                if held.worker_id == worker_id and (wanted is None or job_id in wanted):
                    by_url.setdefault(held.url, []).append((held.receipt, seconds))
        for url, items in by_url.items():
            self._change(url, items)

    async def heartbeat(self, *, worker_id: str, lease_s: float,
                        job_ids: Sequence[int] | None = None) -> None:
        """Extend the visibility of the listed jobs ``worker_id`` holds (every one when
        ``job_ids`` is None) to ``lease_s`` from now."""
        await self._offload(self._heartbeat, worker_id, lease_s, job_ids)

    async def rescue_expired(self, *, limit: int = 1000, reason: str = RESCUE_REASON,
                             quarantine_after: int = QUARANTINE_AFTER,
                             quarantine_reason: str = QUARANTINE_REASON,
                             spread_s: float = RESCUE_SPREAD_S) -> tuple[list[int], list[int]]:
        """Nothing to do (``rescue=False``): SQS makes a message visible again when its
        visibility timeout ends; a job whose attempts its receives used up is archived at its
        next claim."""
        return [], []

    async def cancel_requested(self, *, worker_id: str,
                               job_ids: Sequence[int] | None = None) -> list[int]:
        """Always empty: jobs cannot be cancelled by id on SQS."""
        return []

    async def prune_workers(self, *, older_than_s: float) -> None:
        """Nothing to prune: SQS has no worker registry."""

    def listener(self, callback: WakeCallback) -> None:
        """None: SQS pushes nothing; workers poll (use ``wait_time_s`` for long polling)."""
        return None

    # ---- queue control -------------------------------------------------------------------
    def _refuse(self, what: str) -> CapabilityError:
        return CapabilityError(f"the sqs driver cannot {what}; use the postgres driver")

    def set_paused(self, queue: str, paused: bool) -> None:
        """Not offered (``shared_pause=False``): raises :class:`pgqueue.CapabilityError`."""
        raise self._refuse("pause a queue for every worker (SQS has no shared pause; stop "
                           "the workers instead)")

    set_paused_async = async_twin(set_paused)

    def paused_queues(self) -> set[str]:
        """Always empty: no queue is paused on SQS."""
        return set()

    paused_queues_async = async_twin(paused_queues)

    def forget_queue(self, queue: str) -> bool:
        """Not offered (no pause state to forget): raises :class:`pgqueue.CapabilityError`."""
        raise self._refuse("forget a queue's pause state (SQS has no shared pause)")

    forget_queue_async = async_twin(forget_queue)

    def count(self, queue: str) -> int:
        """Waiting + delayed + in flight (running or in a retry backoff), approximate."""
        counts = self._attrs(queue)
        return 0 if counts is None else sum(counts.values())

    count_async = async_twin(count)

    def sizes(self, queue: str) -> dict[str, int]:
        """SQS's approximate ``waiting``, ``scheduled`` (delayed), ``running`` (in flight:
        running or in a retry backoff) and ``failed`` (in the dead-letter queue)."""
        counts = self._attrs(queue) or {"waiting": 0, "running": 0, "scheduled": 0}
        dead = self._attrs(queue, dead=True)
        failed = 0 if dead is None else dead["waiting"] + dead["running"]
        return {"waiting": counts["waiting"], "scheduled": counts["scheduled"],
                "running": counts["running"], "failed": failed}

    sizes_async = async_twin(sizes)

    def clear(self, queue: str) -> int:
        """``PurgeQueue``: deletes every message of the queue, the running jobs' too (their
        completion is then a no-op); returns the approximate number of waiting and delayed
        jobs it held. AWS allows one purge per queue every 60 s."""
        counts = self._attrs(queue)
        if counts is None:
            return 0
        url = self._url(queue)
        self._call("purge_queue", QueueUrl=url)
        return counts["waiting"] + counts["scheduled"]

    clear_async = async_twin(clear)

    def pop(self, queue: str) -> Job | None:
        """Receive one message of ``queue`` and delete it: the caller owns the job now."""
        url = self._url(queue)
        if url is None:
            return None
        for message in self._receive(url, 1, max(1, self.scan_hold_s)):
            body, foreign = self._body_of(queue, message)
            self._delete(url, [message["ReceiptHandle"]])
            return _job(body, int(body.get("base", 0)), "waiting", foreign)
        return None

    pop_async = async_twin(pop)

    def cancel(self, job_id: int) -> bool:
        """Not offered (``job_lookup=False``): raises :class:`pgqueue.CapabilityError`."""
        raise self._refuse("find a job by id to cancel it (SQS reaches messages only by "
                           "receiving them)")

    cancel_async = async_twin(cancel)

    def get_job(self, job_id: int) -> Job | None:
        """Not offered (``job_lookup=False``): raises :class:`pgqueue.CapabilityError`."""
        raise self._refuse("look a job up by id (SQS reaches messages only by receiving them)")

    get_job_async = async_twin(get_job)

    def get_finished(self, job_id: int) -> FinishedJob | None:
        """Not offered (``history=False``): raises :class:`pgqueue.CapabilityError`."""
        raise self._refuse("keep finished jobs (no history: a completed job's message is "
                           "deleted)")

    get_finished_async = async_twin(get_finished)

    # ---- the failed archive: scans of the dead-letter queues ------------------------------
    def _dead_queues(self, queue: str | None) -> list[str]:
        """The URLs of the dead-letter queues of ``queue`` (every queue when None)."""
        if queue is not None:
            url = self._url(queue, dead=True)
            return [] if url is None else [url]
        urls = []
        for url in self._list_urls():
            parsed = parse_sqs_name(self.queue_prefix, url.rsplit("/", 1)[-1])
            if parsed is not None and parsed[1]:
                urls.append(url)
        return urls

    def _list_urls(self) -> list[str]:
        urls: list[str] = []
        kwargs: dict[str, Any] = {"MaxResults": 1000}
        if self.queue_prefix:
            kwargs["QueueNamePrefix"] = self.queue_prefix
        while True:
            answer = self._call("list_queues", **kwargs)
            urls += answer.get("QueueUrls") or []
            if not answer.get("NextToken"):
                return urls
            kwargs["NextToken"] = answer["NextToken"]

    @contextmanager
    def _scan(self, queue: str | None) -> Iterator[list[_Dead]]:
        """Every dead-letter message (of ``queue``), hidden while the caller works; those the
        caller does not remove from the list are made visible again on exit."""
        dead: list[_Dead] = []
        try:
            for url in self._dead_queues(queue):
                while batch := self._receive(url, BATCH, max(1, self.scan_hold_s)):
                    for m in batch:
                        body, _ = self._body_of("?", m)
                        if "reason" not in body:  # not an archive record: keep it visible
                            body = {**body, "reason": "(not a pgqueue archive record)",
                                    "attempt": 0, "failed_at": _now_ms()}
                        dead.append(_Dead(url, m["ReceiptHandle"], body))
            yield dead
        finally:
            by_url: dict[str, list[tuple[str, int]]] = {}
            for d in dead:
                by_url.setdefault(d.url, []).append((d.receipt, 0))
            for url, items in by_url.items():
                self._change(url, items)

    @staticmethod
    def _matches(d: _Dead, before: dt.datetime | None, ids: Sequence[int] | None,
                 task: str | None) -> bool:
        return ((ids is None or int(d.body["id"]) in ids)
                and (task is None or d.body["task"] == task)
                and (before is None or d.body["failed_at"] < before.timestamp() * 1000))

    def list_failed(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Archived jobs, newest failure first (a scan of the dead-letter queues)."""
        if limit < 1:
            return []
        with self._scan(queue) as dead:
            rows = [_failed(d.body) for d in dead]
        rows.sort(key=lambda f: (f.failed_at, f.id), reverse=True)
        return rows[:limit]

    list_failed_async = async_twin(list_failed)

    def get_failed(self, job_id: int) -> FailedJob | None:
        return next((f for f in self.list_failed(None, 2**31 - 1) if f.id == job_id), None)

    get_failed_async = async_twin(get_failed)

    def redrive(self, ids: Sequence[int] | None = None, queue: str | None = None) -> list[int]:
        """Send archived jobs (``ids``, or all of ``queue``, or all) back to their queue with
        their id, attempt 0 and their errors kept; returns their ids."""
        wanted = None if ids is None else set(ids)
        out = []
        with self._scan(queue) as dead:
            for d in [d for d in dead if wanted is None or int(d.body["id"]) in wanted]:
                if d.body.get("task") == "(not a pgqueue message)":
                    continue
                body = {k: v for k, v in d.body.items()
                        if k not in ("attempt", "reason", "failed_at")}
                body.update(base=0, snoozes=0, run_at=_now_ms())
                self._send(self._need(body["queue"]), [(self._encode(body), 0)])
                self._delete(d.url, [d.receipt])
                dead.remove(d)
                out.append(int(body["id"]))
        return sorted(out)

    redrive_async = async_twin(redrive)

    def purge_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """Delete the archived jobs that match every given filter; returns how many."""
        total = 0
        with self._scan(queue) as dead:
            for d in [d for d in dead if self._matches(d, before, ids, task)]:
                total += self._delete(d.url, [d.receipt])
                dead.remove(d)
        return total

    purge_failed_async = async_twin(purge_failed)

    def count_failed(self, queue: str | None = None, before: dt.datetime | None = None, *,
                     ids: Sequence[int] | None = None, task: str | None = None) -> int:
        """How many archived jobs match the filters (a scan, as for :meth:`purge_failed`)."""
        with self._scan(queue) as dead:
            return sum(1 for d in dead if self._matches(d, before, ids, task))

    count_failed_async = async_twin(count_failed)

    def stats(self) -> list[QueueStats]:
        """Approximate counts of every queue under this prefix (no history: the finished
        counts are 0)."""
        queues = sorted({p[0] for url in self._list_urls()
                         if (p := parse_sqs_name(self.queue_prefix, url.rsplit("/", 1)[-1]))})
        out = []
        for queue in queues:
            s = self.sizes(queue)
            out.append(QueueStats(queue=queue, waiting=s["waiting"], scheduled=s["scheduled"],
                                  running=s["running"], failed=s["failed"]))
        return out

    stats_async = async_twin(stats)
