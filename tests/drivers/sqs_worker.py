"""A worker process for the SIGKILL test of the sqs driver (not a test module).

``python tests/drivers/sqs_worker.py ENDPOINT PREFIX MARKERS`` runs the jobs of task ``t``
(queue ``k``) on the SQS emulator at ENDPOINT with concurrency 2 and a 2 s lease (3 s of
visibility timeout, kept alive by the heartbeat). Each job creates the file ``MARKERS/<job id>``
and then blocks until the process is killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pgqueue
from pgqueue.drivers.sqs import SqsDriver


def main() -> None:
    endpoint, prefix, markers = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    driver = SqsDriver(region="us-east-1", endpoint_url=endpoint, queue_prefix=prefix,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    app = pgqueue.App(driver=driver)
    never = threading.Event()

    @app.task(name="t", queue="k")
    def t(n: int) -> None:
        (markers / str(pgqueue.current_job().id)).touch()
        never.wait()

    worker = app.worker(["k"], concurrency=2, lease_s=2.0, poll_interval=0.1)
    asyncio.run(worker.run())


if __name__ == "__main__":
    main()
