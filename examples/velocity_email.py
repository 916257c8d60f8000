"""The Velocity seed's queue example, in Python: an EmailJob, push / later / work / size / clear.

Configuration comes from ``.env`` in the current directory (then the environment), as in
Velocity. Memory (the default)::

    python examples/velocity_email.py

PostgreSQL (after ``pgqueue migrate``), by configuration only -- a ``.env`` with::

    QUEUE_DRIVER=database
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/app
    QUEUE_TABLE=jobs
    QUEUE_FAILED_TABLE=failed_jobs

Delays are seconds here where the seed uses minutes, so that the example ends by itself.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueue.compat import velocity

# Go's log.Printf: one whole line per call, even from concurrent workers
log = logging.getLogger("example")


# ---- Creating Jobs (package jobs) ------------------------------------------------------------
@dataclass
class EmailJob:
    to: str
    subject: str
    body: str

    def handle(self) -> None:
        log.info(f"Sending email to: {self.to}")
        # Send email logic here

    def failed(self, err: BaseException) -> None:
        log.info(f"Failed to send email to {self.to}: {err}")


@dataclass
class ProcessJob:
    name: str

    def handle(self) -> None:
        log.info(f"Processing: {self.name}")

    def failed(self, err: BaseException) -> None:
        log.info(f"Failed to process {self.name}: {err}")


# ---- Job Registration ------------------------------------------------------------------------
def deserialize_email_job(data: dict[str, Any]) -> EmailJob:
    return EmailJob(**data)


def deserialize_process_job(data: dict[str, Any]) -> ProcessJob:
    return ProcessJob(**data)


def process_job(job: Any) -> None:
    log.info(f"Processing job: {type(job).__name__}")
    job.handle()


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("pgqueue").setLevel(logging.WARNING)

    # Queue auto-initialises from .env
    log.info(f"driver: {velocity.default_queue().app.driver.name}")

    # Register job types (names as given, Go's "*jobs.EmailJob" works as is)
    velocity.register("*jobs.EmailJob", deserialize_email_job)
    velocity.register("*jobs.ProcessJob", deserialize_process_job)

    # Basic usage: push to the default queue, then to a specific queue
    job = EmailJob(to="user@example.com", subject="Welcome", body="Welcome to our service!")
    velocity.push(job)
    velocity.push(ProcessJob(name="report"))
    velocity.push(job, "emails")

    # Delayed jobs (seconds here; the seed uses 5 and 10 minutes)
    velocity.later(timedelta(seconds=0.5), job)
    velocity.later(timedelta(minutes=10), job, "scheduled")
    log.info(f"Queue 'scheduled' has {velocity.size('scheduled')} jobs")

    # Clear queue: all jobs of 'scheduled' (the 10-minute one)
    log.info(f"Cleared {velocity.clear('scheduled')} jobs from 'scheduled'")

    # Start workers, with options: concurrency, poll interval, max retries
    email_worker = velocity.work("emails", process_job, concurrency=3,
                                 interval=timedelta(milliseconds=100), max_retries=3)
    default_worker = velocity.work("default", process_job, concurrency=5)

    # Push some jobs: even ones now, odd ones delayed
    for i in range(10):
        newsletter = EmailJob(to=f"user{i}@example.com", subject="Newsletter",
                              body="Check out our latest updates!")
        if i % 2 == 0:
            velocity.push(newsletter, "emails")  # immediate processing
        else:
            velocity.later(i * 0.1, newsletter, "emails")  # delayed processing

    # Monitor queue sizes until everything ran
    last = -1

    def drained() -> bool:
        nonlocal last
        size = velocity.size("emails")
        if size != last:
            log.info(f"Email queue size: {size}")
            last = size
        return size == 0 and velocity.size("default") == 0

    wait_until(drained)

    # Gracefully stop workers
    email_worker.stop()
    default_worker.stop()
    log.info(f"emails worker processed {email_worker.worker.processed} jobs; "
          f"default worker processed {default_worker.worker.processed} jobs")
    log.info("done")


if __name__ == "__main__":
    main()
