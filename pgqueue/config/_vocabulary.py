"""Vocabularies: the names under which a configuration source spells pgqueue's settings.

The loader knows no names of its own beyond :data:`PGQUEUE` (pgqueue's ``PGQUEUE_*`` variables
and the conventional ``DATABASE_URL``). Any other spelling -- the variables and the YAML shape of
an application pgqueue replaces -- is a :class:`Vocabulary` handed to
:func:`pgqueue.config.load_settings` (the seed products' vocabularies live in
:mod:`pgqueue.compat`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PGQUEUE", "EnvReader", "Found", "Vocabulary", "YamlDocument", "YamlReader",
           "merge_env"]


@dataclass(frozen=True, slots=True)
class Found:
    """One value a reader found: for ``setting`` (a field of :class:`Settings`, or ``config``:
    the connection string of whichever driver is finally selected), already checked with
    :func:`pgqueue.config.parse_setting`, with its ``source`` for messages and its ``rank``
    within its layer (a more specific name has a higher rank and wins)."""

    setting: str
    value: Any
    source: str
    rank: int = 0


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file handed to each :data:`YamlReader`: ``data`` is its top-level mapping;
    :meth:`source` names a key path with its line for messages."""

    path: Path
    data: Mapping[str, Any]
    locate: Callable[[tuple[str, ...]], int | None] = field(repr=False)

    def source(self, *keys: str) -> str:
        """``"<path> line <n>: a.b.c"`` for the key path ``keys`` (the line of the deepest key
        that exists)."""
        line = self.locate(keys)
        where = f" line {line}" if line is not None else ""
        return f"{self.path}{where}: {'.'.join(keys)}"


#: ``reader(variables, source_of) -> values``: reads settings spelled by several variables at
#: once (e.g. a URL from its parts); ``variables`` is the environment or a ``.env`` file,
#: ``source_of(var)`` names a variable's place for messages.
EnvReader = Callable[[Mapping[str, str], Callable[[str], str]], Sequence[Found]]
#: ``reader(document) -> values``: reads settings from a YAML file's own shape.
YamlReader = Callable[[YamlDocument], Sequence[Found]]


@dataclass(frozen=True)
class Vocabulary:
    """How one configuration source spells pgqueue's settings.

    Attributes:
        name: for messages and ``repr`` (e.g. ``"vela"``).
        env: variable -> ``(setting, rank)``: a variable that sets one setting by itself. Within
            one layer, a higher rank wins (pgqueue's own names use 2 for a ``PGQUEUE_``
            spelling of another product's name and 10 for names only pgqueue reads).
        env_readers: readers for settings spelled by several variables at once.
        env_reads: the variables the ``env_readers`` read (listed by ``ENV_VARS``).
        yaml_readers: readers for this source's YAML shape.
        database_url_names: where this vocabulary sets a database URL, for the message when
            the postgres driver has none.
    """

    name: str
    env: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    env_readers: tuple[EnvReader, ...] = ()
    env_reads: tuple[str, ...] = ()
    yaml_readers: tuple[YamlReader, ...] = ()
    database_url_names: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable this vocabulary reads."""
        return (*self.env, *self.env_reads)


def merge_env(vocabularies: Sequence[Vocabulary]) -> dict[str, tuple[str, int]]:
    """The ``env`` mappings of ``vocabularies`` together; a variable two vocabularies map
    differently is a programming error (``ValueError``)."""
    merged: dict[str, tuple[str, int]] = {}
    for vocabulary in vocabularies:
        for var, target in vocabulary.env.items():
            if merged.setdefault(var, target) != target:
                raise ValueError(f"vocabulary {vocabulary.name!r} maps {var} to {target}, "
                                 f"another vocabulary to {merged[var]}")
    return merged


#: pgqueue's own names: always read, whatever other vocabularies are given
PGQUEUE = Vocabulary(
    name="pgqueue",
    env={
        "PGQUEUE_QUEUE_DRIVER": ("driver", 2),
        "DATABASE_URL": ("database_url", -1),
        "PGQUEUE_DATABASE_URL": ("database_url", 10),
        "PGQUEUE_QUEUE_CONFIG": ("config", 2),
        "PGQUEUE_QUEUE_CLUSTER": ("cluster", 2),
        "PGQUEUE_QUEUE_ROUTES": ("routes", 2),
        "PGQUEUE_SCHEMA": ("schema", 10),
        "PGQUEUE_POOLER": ("pooler", 10),
        "PGQUEUE_LISTEN_URL": ("listen_url", 10),
        "PGQUEUE_CONCURRENCY": ("concurrency", 10),
        "PGQUEUE_POLL_INTERVAL": ("poll_interval", 10),
        "PGQUEUE_EVENT_LOOP": ("event_loop", 10),
        "PGQUEUE_MAX_ATTEMPTS": ("max_attempts", 10),
        "PGQUEUE_REDIS_URL": ("redis_url", 10),
        "PGQUEUE_REDIS_TIMEOUT": ("redis_timeout", 10),
        "PGQUEUE_SQS_REGION": ("sqs_region", 10),
        "PGQUEUE_SQS_ENDPOINT": ("sqs_endpoint", 10),
    },
    database_url_names=("PGQUEUE_DATABASE_URL", "DATABASE_URL"),
)
