"""The websocket backend, vendored into this project by ws-template.

Version 1.0.0. Every file in this folder is copied unchanged into each project that
ws-template generates, tests included, so that one fix reaches every project: change it
in the template, not here, and pull it in with ``cruft update`` (or by copying the folder).

- ``session.py``: the session helpers (`run_websocket`, `every`, `receive_json`, ...),
  written once against the few WebSocket methods they need.
- ``backend.py``: the FastAPI face: `create_router` plus the helpers.
"""

__version__ = "1.0.0"
