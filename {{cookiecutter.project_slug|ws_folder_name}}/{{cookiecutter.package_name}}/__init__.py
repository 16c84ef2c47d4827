"""The websocket service: ``app`` (the ASGI application), ``endpoints``, ``settings``.

``websocket/`` holds the vendored websocket backend that the endpoints are built from.
"""
