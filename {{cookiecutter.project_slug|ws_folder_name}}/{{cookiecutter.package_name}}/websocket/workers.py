"""How many worker processes the ASGI server running this process was told to start.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only. Broadcast on a hub inside one process
(`broadcast.MemoryHub`) is wrong with several workers: each worker has its own channels, and
clients on different workers never see each other's messages. The app checks at start-up,
in each worker, with `server_workers`.

No ASGI server tells the app, in its scope or environment, how many processes serve it:
uvicorn and hypercorn start their workers with ``multiprocessing`` (spawn), gunicorn forks
them, and none sets a variable a worker could read (``WEB_CONCURRENCY`` is read by uvicorn
and gunicorn, never set; ``multiprocessing.parent_process()`` is also set under uvicorn's
``--reload``, a single worker). What a worker does hold is the server's own configuration
object, unpickled or forked into it: `server_workers` looks for it among the live objects,
and reads its ``workers``. That finds ``uvicorn --workers N`` (or ``WEB_CONCURRENCY=N``, or
``uvicorn.run(..., workers=N)``), ``hypercorn --workers N`` and ``gunicorn -w N`` (any
worker class, a configuration file included).

It cannot see processes that no configuration in this process counts: the same service
started several times (two ``python -m`` runs, several containers or pods behind one load
balancer), or a server it does not know (granian, daphne, ...). Those are the operator's to
get right: see the README.
"""

from __future__ import annotations

import gc
import sys
from typing import Final, NamedTuple

SERVER_CONFIGS: Final = {
    "uvicorn": "uvicorn.config",
    "hypercorn": "hypercorn.config",
    "gunicorn": "gunicorn.config",
}
"""The servers whose workers can be counted: the module of each one's ``Config`` class."""
SERVER_OPTIONS: Final = {
    "uvicorn": "--workers or WEB_CONCURRENCY",
    "hypercorn": "--workers",
    "gunicorn": "-w, WEB_CONCURRENCY or its configuration file",
}


class ServerWorkers(NamedTuple):
    """``server`` was configured to run ``workers`` worker processes."""

    server: str
    workers: int
    options: str = ""
    """Where the server reads its number of workers from (its options, variables)."""

    def __str__(self) -> str:
        told = f" ({self.options})" if self.options else ""
        return f"{self.server} was started with {self.workers} worker processes{told}"


def server_workers() -> ServerWorkers | None:
    """The server this process runs under and its number of workers, when it can tell.

    The server with the most workers if several configurations are alive (gunicorn with
    uvicorn's worker class holds both); None when no known server configured this process
    (a test's ``TestClient``, a script). A walk over the live objects, once at start-up:
    tens of milliseconds in a worker that imported a web framework.
    """
    classes: dict[type, str] = {}
    for server, module_name in SERVER_CONFIGS.items():
        config_class = getattr(sys.modules.get(module_name), "Config", None)
        if isinstance(config_class, type):
            classes[config_class] = server
    if not classes:
        return None
    found: ServerWorkers | None = None
    for candidate in gc.get_objects():
        name = classes.get(type(candidate))
        if name is None:
            continue
        workers = _workers_of(name, candidate)
        if found is None or workers > found.workers:
            found = ServerWorkers(name, workers, SERVER_OPTIONS[name])
    return found


def _workers_of(server: str, config: object) -> int:
    workers = getattr(config, "workers", 1)
    if not isinstance(workers, int):
        return 1
    if server == "uvicorn" and getattr(config, "reload", False):
        return 1  # uvicorn ignores --workers when it reloads
    if server == "hypercorn":
        return max(workers, 1)  # 0: the server runs in this very process
    return workers
