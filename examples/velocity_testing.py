"""The Velocity seed's testing example, in Python: a memory queue as the default, push, size,
pop, handle.

Run it with pytest (``pytest examples/velocity_testing.py``) or as a script. The first test uses
a memory queue as the seed does; the second runs the same steps on the configured queue
(``.env`` / environment: memory by default, PostgreSQL with ``QUEUE_DRIVER=database`` and
``DATABASE_URL``, on an empty, migrated database).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgqueue.compat import velocity


@dataclass
class EmailJob:
    to: str
    subject: str
    body: str

    def handle(self) -> None:
        print(f"Sending email to: {self.to}")

    def failed(self, err: BaseException) -> None:
        print(f"Failed to send email to {self.to}: {err}")


def check_email_job(q: velocity.Queue) -> None:
    velocity.set_default(q)

    job = EmailJob(to="test@example.com", subject="Test", body="Test email")

    # Push job
    job_id = velocity.push(job)
    assert job_id > 0

    # Check queue size
    size = velocity.size("default")
    assert size == 1, size

    # Process job
    popped = velocity.pop("default")
    assert popped is not None
    assert popped == job

    # Execute job
    popped.handle()
    assert velocity.size("default") == 0


def test_email_job() -> None:
    # Use memory driver for testing
    check_email_job(velocity.new_memory_queue())


def test_email_job_on_configured_queue() -> None:
    check_email_job(velocity.new_queue())


if __name__ == "__main__":
    test_email_job()
    print("test_email_job: ok (memory)")
    test_email_job_on_configured_queue()
    print(f"test_email_job_on_configured_queue: ok ({velocity.default_queue().app.driver.name})")
