"""Configuration sources: environment-shaped variables (the environment or a ``.env`` file) and
YAML files, read through the vocabularies the loader is given. Nothing is written to
``os.environ``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pgqueue.config._values import kind_of, parse_setting
from pgqueue.config._vocabulary import Found, Vocabulary, YamlDocument, merge_env
from pgqueue.errors import ConfigurationError

__all__ = ["env_values", "read_env_file", "read_env_lines", "read_yaml"]

#: the order in which variables are checked (so that the first error reported is stable)
_ORDER = ("driver", "database_url", "config", "cluster", "pooler", "listen_url", "routes",
          "schema", "concurrency", "poll_interval", "event_loop", "max_attempts", "redis_url",
          "redis_timeout", "sqs_region", "sqs_endpoint")


def env_values(variables: Mapping[str, str], vocabularies: Sequence[Vocabulary],
               source_of: Callable[[str], str]) -> list[Found]:
    """The settings ``variables`` (the environment or a ``.env`` file) spell in
    ``vocabularies``, each checked; an empty value counts as not set."""
    out: list[Found] = []
    names = merge_env(vocabularies)
    unknown = sorted(var for var, (name, _) in names.items() if name not in _ORDER)
    if unknown:
        raise ValueError(f"variables mapped to no setting: {', '.join(unknown)}; settings: "
                         f"{', '.join(_ORDER)}")
    for var, (name, rank) in sorted(names.items(),
                                    key=lambda item: (_ORDER.index(item[1][0]), item[1][1])):
        raw = variables.get(var)
        if raw is None or not raw.strip():
            continue
        source = source_of(var)
        out.append(Found(name, parse_setting(name, raw, source), source, rank))
    for vocabulary in vocabularies:
        for reader in vocabulary.env_readers:
            out.extend(reader(variables, source_of))
    return out


# ---- .env files --------------------------------------------------------------------------------
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file into a dict (see :mod:`pgqueue.config` for the syntax). Nothing
    is put into ``os.environ``. Raises :class:`pgqueue.ConfigurationError` for a malformed
    line."""
    return {k: v for k, (v, _) in read_env_lines(Path(path)).items()}


def read_env_lines(path: Path) -> dict[str, tuple[str, int]]:
    """``KEY -> (value, line number)`` of a ``.env`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the file: {exc.strerror or exc}",
                                 key="env_file", source=str(path)) from exc
    out: dict[str, tuple[str, int]] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        source = f"{path} line {number}"
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY_RE.fullmatch(key):
            raise ConfigurationError(
                f"malformed line {raw_line.strip()[:60]!r}: expected KEY=VALUE (KEY: letters, "
                "digits and _), a # comment or a blank line", key="env_file", source=source)
        out[key] = (_env_value(rest.strip(), key, source), number)
    return out


def _env_value(rest: str, key: str, source: str) -> str:
    if rest[:1] in ("'", '"'):
        quote_char = rest[0]
        chars: list[str] = []
        i = 1
        while i < len(rest):
            c = rest[i]
            if quote_char == '"' and c == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                chars.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if c == quote_char:
                tail = rest[i + 1:].strip()
                if tail and not tail.startswith("#"):
                    raise ConfigurationError(f"unexpected text {tail[:30]!r} after the closing "
                                             "quote (a comment needs '#')", key=key,
                                             source=source)
                return "".join(chars)
            chars.append(c)
            i += 1
        raise ConfigurationError(f"unterminated {quote_char} quote; close it on the same line",
                                 key=key, source=source)
    comment = re.search(r"\s#", rest)
    return (rest[:comment.start()] if comment else rest).rstrip()


# ---- YAML files --------------------------------------------------------------------------------
def read_yaml(path: Path) -> YamlDocument | None:
    """The parsed YAML file (``None`` when it is empty); raises a
    :class:`pgqueue.ConfigurationError` when PyYAML is missing, the file cannot be read, its
    syntax is wrong or its top level is not a mapping."""
    source = str(path)
    try:
        import yaml  # optional dependency: the 'yaml' extra
    except ImportError:
        raise ConfigurationError("reading a YAML file needs PyYAML: pip install "
                                 "'pgqueue-tx[yaml]'", key="yaml_file", source=source) from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the file: {exc.strerror or exc}",
                                 key="yaml_file", source=source) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigurationError(f"YAML syntax error{where}: {problem}", key="yaml_file",
                                 source=source) from exc
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigurationError(f"the top level must be a mapping, not {kind_of(data)}",
                                 key="yaml_file", source=source)

    def locate(keys: tuple[str, ...]) -> int | None:
        n: Any = node
        for key in keys:
            if not isinstance(n, yaml.MappingNode):
                break
            found = [v for k, v in n.value if getattr(k, "value", None) == key]
            if not found:
                break
            n = found[-1]
        return int(n.start_mark.line) + 1 if n is not None else None

    return YamlDocument(path=path, data=data, locate=locate)
