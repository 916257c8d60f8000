"""FastAPI + pgqueue: write a row and enqueue a job in the request's AsyncSession transaction.

``POST /signups`` inserts a ``signups`` row and enqueues ``send_welcome`` through the same
SQLAlchemy ``AsyncSession``: both commit together, or (``"fail": true``, any exception) neither
exists. The lifespan runs a pgqueue worker in-process (``RUN_WORKER=0`` to run it separately:
``pgqueue worker main:queue``). Run it (from this folder)::

    export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/fastapi_demo
    pgqueue migrate
    uvicorn --factory main:create_app
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgqueue
from pgqueue.dashboard import asgi_app

#: the job queue; its URL comes from PGQUEUE_DATABASE_URL / DATABASE_URL, or create_app(url)
queue = pgqueue.App()


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    welcomed: Mapped[bool] = mapped_column(default=False)


@queue.task(name="send_welcome", queue="emails")
def send_welcome(signup_id: int) -> str:
    """The job: pretend to send the email, return what was sent (kept in history)."""
    return f"welcome mail for signup {signup_id}"


class SignupIn(BaseModel):
    email: str
    fail: bool = False


def create_app(database_url: str | None = None, *, run_worker: bool | None = None,
               dashboard_token: str | None = None) -> FastAPI:
    """The ASGI app on ``database_url`` (default: ``DATABASE_URL``); ``run_worker`` (default:
    ``RUN_WORKER``, else true) runs a pgqueue worker inside the web process;
    ``dashboard_token`` (default: ``PGQUEUE_DASHBOARD_TOKEN``) mounts pgqueue's dashboard at
    ``/jobs``, behind that token (no token: no dashboard)."""
    url = database_url or os.environ["DATABASE_URL"]
    queue.use_database(url)
    if run_worker is None:
        run_worker = os.environ.get("RUN_WORKER", "1") != "0"
    # psycopg 3 under SQLAlchemy, on the same database (a URL or a "host=... dbname=..." string)
    engine = create_async_engine("postgresql+psycopg://", connect_args=conninfo_to_dict(url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        worker = queue.worker(["emails"]) if run_worker else None
        running = asyncio.create_task(worker.run()) if worker else None
        try:
            yield
        finally:
            if worker and running:
                worker.stop()      # graceful: running jobs finish
                await running
            await queue.aclose()
            await engine.dispose()

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app = FastAPI(lifespan=lifespan)

    @app.post("/signups")
    async def signup(body: SignupIn,
                     s: Annotated[AsyncSession, Depends(session)]) -> dict[str, Any]:
        async with s.begin():                        # one transaction: the row AND the job
            row = Signup(email=body.email)
            s.add(row)
            await s.flush()                          # row.id is known now
            job_id = await send_welcome.enqueue_async(signup_id=row.id, conn=s)
            if body.fail:
                raise HTTPException(409, "payment declined")  # rolls back both
        return {"id": row.id, "job_id": job_id}

    @app.get("/signups/{signup_id}")
    async def read(signup_id: int, s: Annotated[AsyncSession, Depends(session)]) -> dict[str, Any]:
        row = (await s.execute(select(Signup).where(Signup.id == signup_id))).scalar_one()
        return {"id": row.id, "email": row.email}

    token = dashboard_token or os.environ.get("PGQUEUE_DASHBOARD_TOKEN")
    if token:  # your own login would go here instead: asgi_app(queue, auth=callable)
        app.mount("/jobs", asgi_app(queue, auth=token))
    return app
