"""Every message a live test sends or receives, checked against the served AsyncAPI document.

`connect` is ``websockets.sync.client.connect`` with a connection that checks each JSON
object it sends, each frame it receives and the query of its URL against the schemas of its
channel in the server's ``GET /asyncapi.json``: a change of behaviour that the document does
not follow fails the test that sees it. A frame that is not a JSON object is outside the
protocol by construction (error-reply tests send them) and goes unchecked; so does a JSON
object sent with `CheckedConnection.send_unchecked`, for tests of what a channel refuses.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as plain_connect
from websockets.typing import Data, DataLike

from .conftest import AUTH_HEADERS

Messages = dict[str, Draft7Validator]


@dataclass(frozen=True)
class Channel:
    """One channel of the document: what clients may send, what the service may send."""

    address: str
    client: Messages
    server: Messages
    query: Draft7Validator | None

    def check(self, direction: str, message: Any) -> None:
        """Fail unless ``message`` is one of the messages ``direction`` (client or server) may
        send on this channel."""
        declared = self.client if direction == "client" else self.server
        reasons = []
        for name, validator in declared.items():
            error = best_match(validator.iter_errors(message))
            if error is None:
                return
            reasons.append(f"  {name}: {error.message[:200]}")
        shown = repr(message)
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        raise AssertionError(
            f"the {direction} sent a message that {self.address} does not declare in "
            f"/asyncapi.json: {shown}\n" + "\n".join(reasons)
        )


class Contract:
    """The channels of an AsyncAPI document, found by concrete path."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.channels: list[tuple[re.Pattern[str], Channel]] = []
        for key, channel in document["channels"].items():
            messages: dict[str, Messages] = {"receive": {}, "send": {}}
            for operation in document["operations"].values():
                if operation["channel"]["$ref"] != f"#/channels/{key}":
                    continue
                for reference in operation["messages"]:
                    name = reference["$ref"].rsplit("/", 1)[-1]
                    payload = document["components"]["messages"][name]["payload"]
                    messages[operation["action"]][name] = Draft7Validator(payload)
            query = channel.get("bindings", {}).get("ws", {}).get("query")
            address = channel["address"]
            pattern = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(address)))
            self.channels.append(
                (
                    pattern,
                    Channel(
                        address=address,
                        client=messages["receive"],  # what the service receives
                        server=messages["send"],
                        query=Draft7Validator(query) if query else None,
                    ),
                )
            )

    @classmethod
    @functools.cache
    def served_by(cls, origin: str) -> Contract:
        """The document the server at ``origin`` (``http://host:port``) serves."""
        with urllib.request.urlopen(f"{origin}/asyncapi.json", timeout=5) as response:
            return cls(json.load(response))

    def channel(self, path: str) -> Channel:
        for pattern, channel in self.channels:
            if pattern.fullmatch(path):
                return channel
        raise AssertionError(f"{path} is not a channel of /asyncapi.json")


class CheckedConnection(ClientConnection):
    """A ``websockets`` client connection that checks its messages against its channel."""

    def __enter__(self) -> Self:
        super().__enter__()
        return self

    @functools.cached_property
    def channel(self) -> Channel:
        origin = f"http://{self.request.headers['Host']}" if self.request else ""
        return Contract.served_by(origin).channel(urllib.parse.urlsplit(self.path).path)

    @property
    def path(self) -> str:
        assert self.request is not None
        return self.request.path

    def check_query(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        if not query:
            return
        if self.channel.query is None:
            raise AssertionError(f"{self.channel.address} declares no query, got {query!r}")
        parameters = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        error = best_match(self.channel.query.iter_errors(parameters))
        if error is not None:
            raise AssertionError(f"a query {self.channel.address} does not declare: {error}")

    def send(self, message: DataLike | Iterable[DataLike], *, text: bool | None = None) -> None:
        if isinstance(message, str | bytes):
            decoded = _json_object(message)
            if decoded is not None:
                self.channel.check("client", decoded)
        super().send(message, text=text)

    def send_unchecked(self, message: DataLike) -> None:
        """Send what the channel's clients may not send (to test the service's answer)."""
        super().send(message)

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> Any:
        frame = super().recv(timeout=timeout, decode=decode)
        message = _json_object(frame)
        if message is None:
            raise AssertionError(f"{self.channel.address} sent a frame that is not JSON: {frame!r}")
        self.channel.check("server", message)
        return frame


def _json_object(frame: Data) -> dict[str, Any] | None:
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def connect(uri: str, **kwargs: Any) -> CheckedConnection:
    """``websockets.sync.client.connect``, checked against the server's ``/asyncapi.json``;
    with conftest's `AUTH_HEADERS` unless ``additional_headers`` gives the same ones."""
    given = dict(kwargs.pop("additional_headers", None) or {})
    names = {name.lower() for name in given}
    headers = {k: v for k, v in AUTH_HEADERS.items() if k.lower() not in names} | given
    kwargs["additional_headers"] = headers
    connection = plain_connect(uri, create_connection=CheckedConnection, **kwargs)
    assert isinstance(connection, CheckedConnection)
    connection.check_query()
    return connection
