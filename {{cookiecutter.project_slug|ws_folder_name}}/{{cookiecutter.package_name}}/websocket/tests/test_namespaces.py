"""Namespaces: which channels exist, and who may subscribe and publish on them."""

from __future__ import annotations

import pytest

from ..broadcast import ChannelOptions
from ..namespaces import (
    ANYONE,
    AUTHENTICATED,
    NOBODY,
    SUBSCRIBERS,
    TOKEN,
    USER_LIMITED,
    ChannelRequest,
    Namespace,
    Namespaces,
    Rule,
    allows,
    channel_users,
)

NAMESPACES = Namespaces([Namespace("chat"), Namespace("user", subscribe=USER_LIMITED)])


def request(
    channel: str, user: str = "", subscribed: bool = False, token: dict[str, str] | None = None
) -> ChannelRequest:
    namespace = NAMESPACES.find(channel) or Namespace("any")
    return ChannelRequest(channel, namespace, user, None, subscribed, token)


def test_a_channel_belongs_to_the_namespace_before_its_colon() -> None:
    assert NAMESPACES.find("chat:lobby") == Namespace("chat")
    assert NAMESPACES.find("chat:") == Namespace("chat")
    assert NAMESPACES.find("user:#alice") is not None
    assert NAMESPACES.find("news:today") is None
    assert NAMESPACES.find("lobby") is None  # no "" namespace declared
    assert Namespaces([Namespace("")]).find("lobby") == Namespace("")


@pytest.mark.parametrize(
    "channel",
    ["", "chat:" + "x" * 251, "chat:caf\u00e9", "chat:a\nb", "/ws/rooms/a", "chat:\x00"],
)
def test_names_that_cannot_be_channels_have_no_namespace(channel: str) -> None:
    assert NAMESPACES.find(channel) is None


def test_the_users_of_a_channel_follow_its_hash() -> None:
    assert channel_users("user:#alice") == ["alice"]
    assert channel_users("dialog:#alice,bob") == ["alice", "bob"]
    assert channel_users("chat:lobby") == []


async def test_the_rules_that_need_no_code() -> None:
    cases: list[tuple[Rule, ChannelRequest, bool]] = [
        (ANYONE, request("chat:a"), True),
        (AUTHENTICATED, request("chat:a"), False),
        (AUTHENTICATED, request("chat:a", "alice"), True),
        (USER_LIMITED, request("user:#alice", "alice"), True),
        (USER_LIMITED, request("user:#alice", "bob"), False),
        (USER_LIMITED, request("user:#alice"), False),
        (USER_LIMITED, request("user:lobby", "alice"), False),
        (SUBSCRIBERS, request("chat:a", "alice"), False),
        (SUBSCRIBERS, request("chat:a", "alice", subscribed=True), True),
        (NOBODY, request("chat:a", "alice", subscribed=True), False),
        (TOKEN, request("chat:a", "alice"), False),
        (TOKEN, request("chat:a", "alice", token={"sub": "alice", "channel": "chat:a"}), True),
    ]
    for rule, asked, allowed in cases:
        assert await allows(rule, asked) is allowed, (rule, asked)


async def test_a_function_decides_and_its_errors_reach_the_caller() -> None:
    async def only_carol(asked: ChannelRequest) -> bool:
        return asked.user == "carol"

    async def broken(asked: ChannelRequest) -> bool:
        raise LookupError("down")

    assert await allows(only_carol, request("chat:a", "carol")) is True
    assert await allows(only_carol, request("chat:a", "dave")) is False
    with pytest.raises(LookupError):
        await allows(broken, request("chat:a"))


def test_declarations_that_cannot_work_are_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        Namespace("a:b")
    with pytest.raises(ValueError, match="SUBSCRIBERS subscribe"):
        Namespace("chat", subscribe=SUBSCRIBERS)
    with pytest.raises(ValueError, match="TOKEN publish"):
        Namespace("chat", subscribe=TOKEN, publish=TOKEN)
    with pytest.raises(ValueError, match="declared twice"):
        Namespaces([Namespace("chat"), Namespace("chat")])


def test_a_namespace_tells_the_hub_what_to_keep_of_its_channels() -> None:
    namespaces = Namespaces(
        [
            Namespace("chat", presence=True, join_leave=True, history_size=50, history_ttl=60),
            Namespace("news", history=False),
        ]
    )
    assert namespaces.options_of("chat:a") == ChannelOptions(50, 60, True, True)
    assert namespaces.options_of("news:a") == ChannelOptions(0, None, False, False)
    assert namespaces.options_of("/ws/rooms/a") is None
    assert namespaces.options_of("other:a") is None
    with pytest.raises(ValueError, match="history=False for none"):
        Namespace("chat", history_size=0)
    with pytest.raises(ValueError, match="set presence=True too"):
        Namespace("chat", join_leave=True)


def test_a_personal_namespace_gives_each_user_their_channel_and_nobody_else_in() -> None:
    for open_to_others in (ANYONE, AUTHENTICATED):
        with pytest.raises(ValueError, match="is personal, but lets others"):
            Namespace("user", subscribe=open_to_others, personal=True)
    namespaces = Namespaces(
        [
            Namespace("user", subscribe=USER_LIMITED, personal=True),
            Namespace("chat"),
            Namespace("inbox", subscribe=NOBODY, personal=True),
            Namespace("", subscribe=USER_LIMITED, personal=True),
        ]
    )
    assert namespaces.personal_channels("alice") == ["user:#alice", "inbox:#alice", "#alice"]
    assert namespaces.find("#alice") is not None
    for cannot_be_named in ("", "a,b", "café", "x" * 260):  # anonymous, two users, no channel
        assert namespaces.personal_channels(cannot_be_named) == [], cannot_be_named
    assert NAMESPACES.personal_channels("alice") == []
