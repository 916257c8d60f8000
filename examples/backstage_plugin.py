"""The Backstage seed's queue service example, in Python (async, like a backend plugin's init).

Shows every call of the seed: get_queue (same instance on later calls, a second store), add with
delay (ms) and priority, process (the queue idles until a handler is attached), retries with
exponential backoff then the DLQ handler, pause / resume, get_job_count, disconnect (jobs stay)
and process again.

Configuration is ``app-config.yaml`` in the current directory (then the environment). Memory
(the default, no file needed)::

    python examples/backstage_plugin.py

PostgreSQL (after ``pgqueue migrate``), by configuration only::

    backend:
      queue:
        defaultStore: postgres
        maxAttempts: 3
        postgres:
          connection: postgresql://postgres@127.0.0.1:5432/app

The retry backoff here is 10x faster than the seed's ~1, 2, 4, 8 s, so that the example ends
within a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pgqueue import Job, RetryPolicy
from pgqueue.compat import backstage


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(0.02)


async def init() -> None:
    failed_jobs: list[dict[str, Any]] = []

    async def dlq_handler(job: Job, error: BaseException) -> None:
        print(f"Job {job.id} failed permanently after {job.attempt} attempts: {error} "
              f"(payload {job.payload})")
        # store it for later analysis (pgqueue also keeps it in failed_jobs)
        failed_jobs.append({"jobId": job.id, "payload": job.payload, "error": str(error),
                            "attempts": job.attempt})

    # Get a queue instance with the default store (memory if not configured).
    work_queue = backstage.get_queue("my-work-queue", dlq_handler=dlq_handler,
                                     retry=RetryPolicy(base=0.1))
    print(f"my-work-queue uses the {work_queue.store} store, "
          f"max {work_queue.max_attempts} attempts")
    # Later calls return the same instance (their options are ignored).
    assert backstage.get_queue("my-work-queue", store="memory") is work_queue

    # Get a queue instance with a specific store type: backends can be mixed in one app. The
    # seed uses redis here, which must then be configured (backend.queue.redis.connection).
    other_queue = backstage.get_queue("my-memory-queue", store="memory")

    # Add a simple job to the queue
    await work_queue.add_async({"task": "send_email", "recipient": "user@example.com"})
    # Add a job with options: wait 0.5 s (5 s in the seed); lower priority than default (20)
    await work_queue.add_async({"task": "cleanup"}, delay=500, priority=50)

    # Priority: lower numbers first
    await work_queue.add_async({"task": "critical_job"}, priority=1)
    await work_queue.add_async({"task": "normal_job"})  # default priority: 20
    await work_queue.add_async({"task": "background_job"}, priority=100)
    # Delay combined with priority
    await work_queue.add_async({"task": "scheduled_important_task"}, delay=300, priority=5)
    # Retries: this one fails twice, then succeeds; this one always fails (then: DLQ)
    await work_queue.add_async({"task": "risky_operation", "fail_times": 2})
    await work_queue.add_async({"task": "always_fails"})

    count = await work_queue.get_job_count_async()
    print(f"Queue has {count} jobs (waiting + active); no handler yet, so nothing runs")

    done: list[str] = []

    async def handler(job: Job) -> None:
        print(f"Processing job {job.id}: payload={job.payload} attempt={job.attempt}")
        await asyncio.sleep(0.02)  # simulate work
        task = job.payload["task"]
        if task == "risky_operation" and job.attempt <= job.payload["fail_times"]:
            raise RuntimeError("risky operation failed")
        if task == "always_fails":
            raise RuntimeError("this job always fails")
        done.append(task)

    # Process jobs (default concurrency 1, or backend.queue.defaultConcurrency)
    await work_queue.process_async(handler)
    await wait_until(lambda: len(done) == 7 and len(failed_jobs) == 1)
    print(f"Processed in this order: {', '.join(done)}")

    # Pause and resume
    await work_queue.pause_async()
    print("Queue paused")
    await work_queue.add_async({"task": "added_while_paused"})
    print(f"Queue has {await work_queue.get_job_count_async()} jobs (waiting + active)")
    await work_queue.resume_async()
    print("Queue resumed")
    await wait_until(lambda: "added_while_paused" in done)

    # Disconnect: stops processing, keeps the jobs
    await work_queue.disconnect_async()
    print("Disconnected from queue")
    await work_queue.add_async({"task": "added_after_disconnect"})
    print(f"Queue has {await work_queue.get_job_count_async()} jobs after disconnect")
    # To continue processing after disconnecting, call process() again
    await work_queue.process_async(handler)
    await wait_until(lambda: "added_after_disconnect" in done)
    print(f"Processed after reconnecting: {done[-1]}")

    # Concurrency: process up to 5 jobs at once
    for n in range(10):
        await other_queue.add_async({"task": "process_task", "n": n})
    started = time.monotonic()
    other_done: list[int] = []

    async def process_task(job: Job) -> None:
        await asyncio.sleep(0.1)
        other_done.append(job.payload["n"])

    await other_queue.process_async(process_task, concurrency=5)
    await wait_until(lambda: len(other_done) == 10)
    print(f"my-memory-queue: 10 jobs of 0.1 s with concurrency 5 took "
          f"{time.monotonic() - started:.1f} s")

    # Clean up resources when shutting down
    await work_queue.disconnect_async()
    await other_queue.disconnect_async()
    print(f"Dead-lettered: {[f['payload']['task'] for f in failed_jobs]}")
    await backstage.reset_async()
    print("done")


if __name__ == "__main__":
    asyncio.run(init())
