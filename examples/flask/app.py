"""Flask + pgqueue: write a row and enqueue a job in one SQLAlchemy Session transaction.

``POST /signups`` inserts a ``signups`` row and enqueues ``send_welcome`` through the same
``Session``: both commit together, or (``"fail": true``, any exception) neither exists. Workers
run as their own process: ``pgqueue worker app:queue``. Run it (from this folder)::

    export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/flask_demo
    pgqueue migrate
    flask --app app run &
    pgqueue worker app:queue
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, request
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import pgqueue

#: the job queue; its URL comes from PGQUEUE_DATABASE_URL / DATABASE_URL, or create_app(url)
queue = pgqueue.App()


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


@queue.task(name="send_welcome", queue="emails")
def send_welcome(signup_id: int) -> str:
    """The job: pretend to send the email, return what was sent (kept in history)."""
    return f"welcome mail for signup {signup_id}"


def create_app(database_url: str | None = None) -> Flask:
    """The Flask app on ``database_url`` (default: ``DATABASE_URL``)."""
    url = database_url or os.environ["DATABASE_URL"]
    queue.use_database(url)
    # psycopg 3 under SQLAlchemy, on the same database (a URL or a "host=... dbname=..." string)
    engine = create_engine("postgresql+psycopg://", connect_args=conninfo_to_dict(url))
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    app = Flask(__name__)

    @app.post("/signups")
    def signup() -> dict[str, Any]:
        body = request.get_json()
        with sessions.begin() as s:                  # one transaction: the row AND the job
            row = Signup(email=body["email"])
            s.add(row)
            s.flush()                                # row.id is known now
            job_id = send_welcome.enqueue(signup_id=row.id, conn=s)
            if body.get("fail"):
                abort(409, "payment declined")       # raises: rolls back both
        return {"id": row.id, "job_id": job_id}

    return app


if os.environ.get("DATABASE_URL"):
    app = create_app()     # for `flask --app app run`
