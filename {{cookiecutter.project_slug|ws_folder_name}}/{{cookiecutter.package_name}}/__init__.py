"""The websocket service: ``app`` (the ASGI application), ``endpoints``, ``settings``.

``websocket/`` holds the vendored websocket backend that the endpoints are built from.
"""

__version__ = "0.1.0"
"""The service's version: the package's (pyproject.toml reads it here) and its API documents'."""
