"""A worker process for the SIGKILL test of the redis driver (not a test module).

``python tests/drivers/redis_worker.py URL PREFIX`` runs the jobs of task ``t`` (queue ``k``)
with concurrency 2 and a 0.5 s lease. Each job adds its id to the Redis set
``<PREFIX>:test:started`` and then blocks until the process is killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import redis

import pgqueue
from pgqueue.drivers.redis import RedisDriver


def main() -> None:
    url, prefix = sys.argv[1], sys.argv[2]
    app = pgqueue.App(driver=RedisDriver(url, prefix=prefix))
    marker = redis.Redis.from_url(url)
    never = threading.Event()

    @app.task(name="t", queue="k")
    def t(n: int) -> None:
        marker.sadd(f"{prefix}:test:started", pgqueue.current_job().id)
        never.wait()

    worker = app.worker(["k"], concurrency=2, lease_s=0.5, poll_interval=0.1)
    asyncio.run(worker.run())


if __name__ == "__main__":
    main()
