"""Sentinel URLs: split out of a list of shards, read, refused, and shown without secrets.

(Following a Sentinel group's master through failovers is proven on real servers by the
template's ``tests/test_redis_failover.py``.)
"""

from __future__ import annotations

import pytest

from ..redis_sentinel import SentinelGroup, redis_url_problem, shown, split_redis_urls


def test_a_list_of_shards_keeps_each_groups_sentinels_together() -> None:
    value = (
        "redis+sentinel://s1:26379,s2,[::1]:26380/a, redis://plain:6379/0,"
        "rediss+sentinel://s1,s2/b/3,unix:///run/redis.sock"
    )
    assert split_redis_urls(value) == [
        "redis+sentinel://s1:26379,s2,[::1]:26380/a",
        "redis://plain:6379/0",
        "rediss+sentinel://s1,s2/b/3",
        "unix:///run/redis.sock",
    ]
    assert split_redis_urls("redis://a:6379/0,,redis://b:6379/0,") == [
        "redis://a:6379/0",
        "redis://b:6379/0",
    ]


def test_a_sentinel_url_is_read_with_its_defaults() -> None:
    group = SentinelGroup.parse(
        "rediss+sentinel://app:pa%40ss@s1:26380,s2,[::1]:26381/cache/2"
        "?sentinel_password=sp&sentinel_username=su"
    )
    assert group == SentinelGroup(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master="cache",
        db=2,
        tls=True,
        username="app",
        password="pa@ss",
        sentinel_username="su",
        sentinel_password="sp",
    )
    plain = SentinelGroup.parse("redis+sentinel://s1/main")
    assert (plain.db, plain.tls, plain.password, plain.sentinel_password) == (0, False, None, None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:secret@s1:26379", "names the master"),
        ("redis+sentinel://s1/main/db/more", "names the master"),
        ("redis+sentinel://s1:port/main", "HOST or HOST:PORT"),
        ("redis+sentinel://s1,/main", "HOST or HOST:PORT"),
        ("redis+sentinel://s1/main/first", "is a number"),
        ("redis+sentinel://s1/main?password=secret", "not password"),
        ("sentinel://s1/main", "write redis://HOST:6379/0"),
        ("localhost:6379", "write redis://HOST:6379/0"),
    ],
)
def test_a_bad_url_gets_one_sentence_without_its_secrets(url: str, problem: str) -> None:
    sentence = redis_url_problem(url)
    assert sentence is not None
    assert problem in sentence
    assert "secret" not in sentence
    assert "\n" not in sentence


def test_good_urls_have_no_problem() -> None:
    for url in ("redis://localhost:6379/0", "unix:///run/r.sock", "redis+sentinel://s1/main"):
        assert redis_url_problem(url) is None, url


def test_urls_are_shown_without_user_names_or_passwords() -> None:
    assert shown("redis+sentinel://u:secret@s1:26379,s2/main/1?sentinel_password=secret") == (
        "redis+sentinel://s1:26379,s2/main/1"
    )
    assert shown("rediss://u:secret@redis.example:6380/0") == "rediss://redis.example:6380/0"
