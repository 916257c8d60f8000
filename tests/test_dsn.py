"""Connection strings (pgqueue._dsn): one redaction for every shape, and the parse, check,
cluster and conversion helpers every other module calls. No server needed."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

import pgqueue
from pgqueue._dsn import (
    apply_cluster,
    check_redis_url,
    parse_hosts,
    redact,
    redis_url,
    to_libpq,
    to_sqlalchemy_url,
    url_from_env,
)
from pgqueue.drivers import get_driver

SECRET = "s3cr3t"

#: (input, redacted): every shape pgqueue accepts, with the password somewhere in it
SHAPES = [
    (f"postgresql://app:{SECRET}@db:5432/jobs", "postgresql://app:***@db:5432/jobs"),
    (f"postgres://app:{SECRET}@db/jobs", "postgres://app:***@db/jobs"),
    (f"postgresql+psycopg://app:{SECRET}@db/jobs?sslmode=require",
     "postgresql+psycopg://app:***@db/jobs?sslmode=require"),
    (f"postgresql://app:{SECRET}@h1:5432,h2:5433/jobs?target_session_attrs=read-write",
     "postgresql://app:***@h1:5432,h2:5433/jobs?target_session_attrs=read-write"),
    (f"postgresql://app@db/jobs?password={SECRET}&sslmode=require",
     "postgresql://app@db/jobs?password=***&sslmode=require"),
    (f"postgresql:///jobs?host=/run/pg&password={SECRET}",
     "postgresql:///jobs?host=/run/pg&password=***"),
    (f"host=db port=5432 password={SECRET} dbname=jobs",
     "host=db port=5432 password=*** dbname=jobs"),
    (f"password={SECRET} host=db", "password=*** host=db"),
    (f"host=db password = '{SECRET} with spaces' dbname=jobs",
     "host=db password = *** dbname=jobs"),
    (f"host=db password='it\\'s {SECRET}' dbname=jobs", "host=db password=*** dbname=jobs"),
    (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
    (f"rediss://worker:{SECRET}@cache:6380/1", "rediss://worker:***@cache:6380/1"),
    (f"unix://:{SECRET}@/var/run/redis.sock?db=0", "unix://:***@/var/run/redis.sock?db=0"),
    (f"unix:///var/run/redis.sock?db=0&password={SECRET}",
     "unix:///var/run/redis.sock?db=0&password=***"),
    # an unencoded '@' or '/' in the password, a URL Python cannot parse: still hidden
    (f"postgresql://app:p@ss/{SECRET}@db/jobs", "postgresql://app:***@db/jobs"),
    (f"postgresql://app:{SECRET}@[::1", "postgresql://app:***@[::1"),
]

#: nothing to hide: unchanged
NO_PASSWORD = ["postgresql://app@db:5432/jobs", "postgresql://db/jobs?sslmode=require",
               "host=db dbname=jobs user=app", "redis://cache:6379/0", "rediss://cache",
               "unix:///var/run/redis.sock?db=0", "", "not a url at all"]


@pytest.mark.parametrize(("text", "expected"), SHAPES, ids=[s[0][:30] for s in SHAPES])
def test_redact_hides_the_password_of_every_shape(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert SECRET not in redact(text)
    assert redact(redact(text)) == expected  # idempotent


@pytest.mark.parametrize("text", NO_PASSWORD)
def test_redact_leaves_strings_without_a_password_alone(text: str) -> None:
    assert redact(text) == text


def test_every_message_and_display_uses_redaction() -> None:
    """The error messages of to_libpq and check_redis_url, Settings.describe() and the redis
    driver's messages and repr all go through redact()."""
    for bad in (f"mysql://app:{SECRET}@db/jobs", f"postgresql://app:{SECRET}@db:99999/jobs"):
        with pytest.raises(pgqueue.ConfigurationError) as info:
            to_libpq(bad)
        assert SECRET not in str(info.value) and "***" in str(info.value)
    with pytest.raises(pgqueue.ConfigurationError) as info:
        check_redis_url(f"http://:{SECRET}@cache:6379", key="redis_url", source="test")
    assert SECRET not in str(info.value)
    settings = pgqueue.Settings(database_url=f"postgresql://app:{SECRET}@db/jobs",
                                redis_url=f"redis://:{SECRET}@cache:6379/0")
    shown = {name: value for name, value, _ in settings.describe()}
    assert shown["database_url"] == redact(settings.database_url or "")
    assert "password=***" in shown["database_url"]
    assert shown["redis_url"] == "redis://:***@cache:6379/0"
    driver = get_driver("redis", url=f"redis://:{SECRET}@127.0.0.1:6379/0")
    assert SECRET not in repr(driver) and "***" in repr(driver)
    with pytest.raises(pgqueue.ConfigurationError) as info:
        get_driver("redis", url=f"redis://:{SECRET}@127.0.0.1:6379/zero")
    assert SECRET not in str(info.value)


# ---- parse and check ---------------------------------------------------------------------------
def test_to_libpq_accepts_every_postgres_spelling() -> None:
    for url in ("postgresql://app:pw@db:5433/jobs", "postgres://app:pw@db:5433/jobs",
                "postgresql+psycopg://app:pw@db:5433/jobs",
                "host=db port=5433 user=app password=pw dbname=jobs"):
        params = conninfo_to_dict(to_libpq(url))
        assert (params["host"], params["port"], params["user"], params["dbname"]) == (
            "db", "5433", "app", "jobs"), url


@pytest.mark.parametrize(("url", "words"), [
    ("", "is empty"),
    ("mysql://u@h/db", "not a PostgreSQL URL"),
    ("postgresql://u@h/db?bogus=1", "malformed"),
    ("postgresql://u@h:0/db", "1 to 65535"),
])
def test_to_libpq_errors(url: str, words: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError) as info:
        to_libpq(url, source="here")
    assert info.value.key == "database_url" and info.value.source == "here"
    assert words in str(info.value)


def test_to_sqlalchemy_url_round_trips() -> None:
    url = to_sqlalchemy_url("postgresql://app:p%40ss@db:5433/jobs?sslmode=disable")
    assert url.startswith("postgresql+psycopg://app:p%40ss@/jobs?")
    assert conninfo_to_dict(to_libpq(url)) == conninfo_to_dict(
        to_libpq("postgresql://app:p%40ss@db:5433/jobs?sslmode=disable"))


def test_check_redis_url() -> None:
    for good in ("redis://cache", "redis://:pw@cache:6380/2", "rediss://cache:6379/0",
                 "unix:///var/run/redis.sock"):
        assert check_redis_url(good, key="k", source="s") == good
    for bad, words in (("http://cache", "not a Redis URL"), ("redis://cache/zero", "not a number"),
                       ("redis:///0", "no host"), ("redis://cache:99999", "malformed"),
                       ("unix://", "no socket path")):
        with pytest.raises(pgqueue.ConfigurationError) as info:
            check_redis_url(bad, key="k", source="s")
        assert words in str(info.value), bad


def test_redis_url_from_parts() -> None:
    assert redis_url("cache", 6380, 3) == "redis://cache:6380/3"
    assert redis_url("cache", 6379, 0, "p@ss/word") == "redis://:p%40ss%2Fword@cache:6379/0"
    assert redis_url("::1", 6379, 0) == "redis://[::1]:6379/0"


# ---- cluster -----------------------------------------------------------------------------------
def test_parse_hosts_and_apply_cluster() -> None:
    hosts = parse_hosts(["db1", "db2:5433", "[::1]"], key="cluster", source="test")
    assert hosts == ("db1:5432", "db2:5433", "[::1]:5432")
    conninfo, named = apply_cluster(to_libpq("postgresql://app:pw@db0/jobs"), hosts,
                                    source="test")
    params = conninfo_to_dict(conninfo)
    assert (params["host"], params["port"]) == ("db1,db2,::1", "5432,5433,5432")
    assert params["target_session_attrs"] == "read-write" and params["password"] == "pw"
    assert named == hosts
    conninfo, named = apply_cluster(to_libpq("postgresql://app@h1:5432,h2:5432/jobs"), True,
                                    source="test")
    assert named == ("h1:5432", "h2:5432")
    for bad in (["db1", ""], ["db:x"], ["db:70000"], [5432]):
        with pytest.raises(pgqueue.ConfigurationError) as info:
            parse_hosts(bad, key="cluster", source="test")
        assert "host[:port]" in str(info.value)


def test_url_from_env() -> None:
    assert url_from_env({}) is None
    assert url_from_env({"DATABASE_URL": "postgresql://a/b"}) == (
        "postgresql://a/b", "DATABASE_URL")
    assert url_from_env({"DATABASE_URL": "postgresql://a/b", "PGQUEUE_DATABASE_URL": " x "}) == (
        "x", "PGQUEUE_DATABASE_URL")
