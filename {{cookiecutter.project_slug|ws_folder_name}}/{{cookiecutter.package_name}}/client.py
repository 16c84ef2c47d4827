"""A Python client of this service: ``python -m <package>.client ws://HOST:PORT/PATH``.

It prints every JSON object that arrives and sends each line typed; it reconnects when the
connection is lost and resumes broadcast channels where it was. In code::

    from <package>.client import Client

    async with Client("ws://127.0.0.1:8000/ws/rooms/lobby") as client:
        await client.send({"text": "hello"})
        async for message in client:
            ...

The client is `websocket.client.Client` (retry rules and options there); `service_message`
narrows a received object to the service's own message types (`Broadcast`, ...).
"""

import sys

from .websocket.client import (
    Broadcast,
    Client,
    Dropped,
    Error,
    Refused,
    ServiceMessage,
    Subscribed,
    Tick,
    main,
    service_message,
)

__all__ = [
    "Broadcast",
    "Client",
    "Dropped",
    "Error",
    "Refused",
    "ServiceMessage",
    "Subscribed",
    "Tick",
    "main",
    "service_message",
]

if __name__ == "__main__":
    sys.exit(main())
