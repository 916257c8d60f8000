"""The worker runtime (asyncio): :class:`Worker` and the running job's context."""

from pgqueue.worker.context import JobContext, current_context, current_job
from pgqueue.worker.worker import Worker

__all__ = ["JobContext", "Worker", "current_context", "current_job"]
