"""RPC methods: the Python handlers of a ``channels`` endpoint's ``rpc`` and ``send`` commands.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). No protocol in it: the project registers its methods in an `RpcMethods`
(``channels.py``), and the protocol (``centrifuge_protocol.py``) calls them. A method is an
async function of an `RpcRequest` that returns what the client gets (any JSON value, None for
none)::

    RPC = RpcMethods()

    @RPC.method("whoami", result={"type": "object", "required": ["user"]})
    async def whoami(request: RpcRequest) -> dict[str, str]:
        \"\"\"Who the connection is.\"\"\"
        return {"user": request.user}

``params`` (a JSON Schema, draft 7) is checked before the handler runs: data that does not
match is refused with error 107 and a short message that says where, not what. A handler
refuses with `RpcError` (a code from 400 to 1999, a message the client gets, ``temporary`` if
a retry may succeed); any other exception is a bug: the client gets error 100 (temporary),
the service logs it once with its traceback (the method's name, never the data), and the
connection goes on. ``@RPC.on_send`` registers the handler of ``send`` (a message that gets
no reply). Each connection runs its commands one after the other, as Centrifuge does: a slow
method delays the connection's next commands, not the other connections'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, best_match

if TYPE_CHECKING:
    from .broadcast import Hub

Schema: TypeAlias = Mapping[str, Any]
Handler: TypeAlias = Callable[["RpcRequest"], Awaitable[Any]]
SendHandler: TypeAlias = Callable[["RpcRequest"], Awaitable[None]]

MIN_APPLICATION_CODE: Final = 400
MAX_APPLICATION_CODE: Final = 1999
"""The error codes left to applications (Centrifuge's own are below 400, its disconnects
from 3000)."""
MAX_METHOD_NAME: Final = 128
MAX_MESSAGE: Final = 200
"""Characters of an error message at most (a longer one is cut)."""


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """A call of a method by a connection (``method`` is "" for a ``send``)."""

    method: str
    data: Any
    """The JSON value the client sent (None if none)."""
    user: str
    """The connection's user ("" when anonymous)."""
    identity: object
    """What auth.py returned for the connection, or the claims of its connection token."""
    client_id: str
    """The connection's id (the ``client`` of its connect reply)."""
    hub: Hub
    """The hub the endpoint serves (to read a channel's history, publish, ask presence)."""


class RpcError(Exception):
    """What a method raises to refuse a call: the client gets ``code`` and ``message``."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        if not MIN_APPLICATION_CODE <= code <= MAX_APPLICATION_CODE:
            raise ValueError(
                f"RpcError code {code}: applications use {MIN_APPLICATION_CODE} to "
                f"{MAX_APPLICATION_CODE} (lower ones are the protocol's own)."
            )
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_MESSAGE]
        self.temporary = temporary


class MethodNotFound(LookupError):
    """No method of that name is registered (error 104)."""


class BadParams(Exception):
    """The data of a call does not match its method's ``params`` schema (error 107)."""


class Described(NamedTuple):
    """A method as the AsyncAPI document lists it."""

    params: Schema | None
    result: Schema | None
    summary: str


@dataclass(frozen=True, slots=True)
class _Method:
    handler: Handler
    params: Draft7Validator | None
    described: Described


class RpcMethods:
    """The RPC methods of a channels endpoint, by name (``ChannelsConfig(rpc=...)``)."""

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}
        self._send: SendHandler | None = None

    def method(
        self, name: str, *, params: Schema | None = None, result: Schema | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the decorated async function as the method ``name``: ``params`` is the
        JSON Schema its data must match (None: any), ``result`` that of what it returns
        (for the AsyncAPI document; not checked). The function's docstring is its summary."""
        if not (0 < len(name) <= MAX_METHOD_NAME and name.isascii() and name.isprintable()):
            raise ValueError(
                f"The RPC method name {name!r} must be 1 to {MAX_METHOD_NAME} printable "
                "ASCII characters."
            )
        if name in self._methods:
            raise ValueError(f"The RPC method {name!r} is registered twice.")
        validator = None
        for kind, schema in (("params", params), ("result", result)):
            if schema is None:
                continue
            try:
                Draft7Validator.check_schema(schema)
            except SchemaError as error:
                raise ValueError(
                    f"The {kind} schema of the RPC method {name!r} is not a JSON Schema: "
                    f"{error.message}"
                ) from None
        if params is not None:
            validator = Draft7Validator(params)

        def register(handler: Handler) -> Handler:
            summary = (handler.__doc__ or "").strip().partition("\n")[0]
            described = Described(params, result, summary)
            self._methods[name] = _Method(handler, validator, described)
            return handler

        return register

    def on_send(self, handler: SendHandler) -> SendHandler:
        """Register the decorated async function as the handler of ``send`` commands."""
        if self._send is not None:
            raise ValueError("A send handler is registered already.")
        self._send = handler
        return handler

    @property
    def handles_send(self) -> bool:
        """Whether a handler of ``send`` is registered."""
        return self._send is not None

    def described(self) -> dict[str, Described]:
        """Each method's schemas and summary, by name (for ``asyncapi.channels_endpoint``)."""
        return {name: method.described for name, method in self._methods.items()}

    async def call(self, request: RpcRequest) -> Any:
        """What the method ``request.method`` returns for ``request``: `MethodNotFound` if
        there is none, `BadParams` if the data does not match its ``params``; the handler's
        own exceptions (`RpcError` or others) propagate."""
        method = self._methods.get(request.method)
        if method is None:
            raise MethodNotFound(request.method)
        if method.params is not None:
            error = best_match(method.params.iter_errors(request.data))
            if error is not None:  # where, and which rule: never the data itself
                problem = f"data does not match the params schema at {error.json_path} "
                raise BadParams(f"{problem}({error.validator})"[:MAX_MESSAGE])
        return await method.handler(request)

    async def send(self, request: RpcRequest) -> bool:
        """Give a ``send``'s data to the send handler; False if there is none."""
        if self._send is None:
            return False
        await self._send(request)
        return True
