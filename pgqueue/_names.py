"""Validation of names that reach the database: schema, queue and task names.

Schema names become SQL identifiers (always quoted through psycopg.sql or SQLAlchemy as well), so
they are held to a strict shape. Queue and task names are only ever bound as values, but are still
bounded so that a hostile or accidental value gives a clear error instead of a strange row.
"""

from __future__ import annotations

import re

from pgqueue.errors import ValidationError

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-/]{0,199}")

MAX_NAME = 200

#: the newest migration revision this code needs (tests check it equals alembic's head; kept
#: here so that workers can check the schema without importing alembic and SQLAlchemy)
SCHEMA_HEAD = "0009"


def validate_schema(schema: object) -> str:
    """A schema name: lowercase letters, digits and ``_``, starting with a letter or ``_``,
    at most 48 characters (so that derived LISTEN channel names fit in 63 bytes)."""
    if not isinstance(schema, str) or not _SCHEMA_RE.fullmatch(schema):
        raise ValidationError(
            f"invalid schema name {_show(schema)}: use 1-48 lowercase letters, digits or '_', "
            "starting with a letter or '_' (for example 'pgqueue')"
        )
    if schema.startswith("pg_"):
        raise ValidationError(f"invalid schema name {schema!r}: names starting with 'pg_' are "
                              "reserved by PostgreSQL")
    return schema


def validate_name(value: object, what: str) -> str:
    """A queue or task name: 1-200 characters of letters, digits and ``_ . : - /``."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValidationError(
            f"invalid {what} name {_show(value)}: use 1-{MAX_NAME} characters from letters, "
            "digits and '_ . : - /', starting with a letter, digit or '_'"
        )
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
