"""The worker runtime (asyncio; sync handlers in a thread pool)."""

from pgqueue.worker.context import JobContext, current_context, current_job
from pgqueue.worker.worker import Worker

__all__ = ["JobContext", "Worker", "current_context", "current_job"]
