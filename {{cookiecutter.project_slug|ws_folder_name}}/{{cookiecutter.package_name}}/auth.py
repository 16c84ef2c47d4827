"""Who may open a websocket: decided before the handshake is accepted.

`authenticate` is called with the `Handshake` (path, headers, cookies, client address) of
every websocket connection before it is accepted. Return an identity (any object: it is
then ``scope["user"]``) or None to let the client in; raise ``Refuse()`` to refuse it
(HTTP 403) or ``Refuse(401)``. The README's "Security and limits" section has a worked
example. Never read a token from the query string: query strings end up in access logs.
"""

from __future__ import annotations

from .websocket.guard import Handshake


async def authenticate(handshake: Handshake) -> object | None:
    """Let every client in, with no identity: the service has no accounts yet."""
    return None
