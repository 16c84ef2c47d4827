{%- set metrics = cookiecutter.metrics | ws_yes -%}
"""Run the service with production defaults: ``python -m <package>`` (``--help`` explains).

Each option's default comes from an environment variable (see settings.py and README.md),
so a container or process manager configures the service the same way as the flags do.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
{%- if metrics %}
import shutil
{%- endif %}
import sys
{%- if metrics %}
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
{%- else %}
from collections.abc import Sequence
{%- endif %}
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .settings import LOG_LEVELS, Settings, SettingsError, get_settings
from .websocket.workers import ServerWorkers

PACKAGE = __spec__.parent if __spec__ else "app"
{%- if metrics %}
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
{%- endif %}


def parse_arguments(settings: Settings, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}",
        description="Serve the websocket service with uvicorn (its websockets-sansio protocol, "
        "holding less per connection: websocket/uvicorn_protocol.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=settings.host, help="address to listen on (HOST); 0.0.0.0 in a container")
    add("--port", type=int, default=settings.port, help="port to listen on (PORT)")
    add(
        "--workers",
        type=int,
        default=settings.workers,
{%- if metrics %}
        help="worker processes (WORKERS); connection and rate limits apply per process, "
        "metrics are the whole service's",
{%- else %}
        help="worker processes (WORKERS); connection and rate limits apply per process",
{%- endif %}
    )
    add(
        "--log-level",
        choices=[level.lower() for level in LOG_LEVELS],
        default=settings.log_level.lower(),
        help="log level of the service and of uvicorn (LOG_LEVEL)",
    )
    add("--reload", action="store_true", help="restart when the code changes (development only)")
    add(
        "--ws-per-message-deflate",
        action=argparse.BooleanOptionalAction,
        default=settings.ws_per_message_deflate,
        help="offer websocket compression (WS_PER_MESSAGE_DEFLATE): about twice the memory per "
        "connection, and a compression-oracle risk when secrets and text an attacker chooses "
        "share a message",
    )
    add(
        "--ws-ping-interval",
        type=float,
        default=settings.ws_ping_interval_seconds,
        help="seconds between the server's pings (WS_PING_INTERVAL_SECONDS); 0: no pings",
    )
    add(
        "--ws-ping-timeout",
        type=float,
        default=settings.ws_ping_timeout_seconds,
        help="seconds to wait for a pong before closing with 1011 (WS_PING_TIMEOUT_SECONDS)",
    )
    add(
        "--shutdown-timeout",
        type=float,
        default=settings.shutdown_timeout_seconds,
        help="seconds that open sessions get to end on SIGTERM (SHUTDOWN_TIMEOUT_SECONDS)",
    )
    arguments = parser.parse_args(argv)
    if arguments.reload and arguments.workers > 1:
        parser.error("--reload runs a single process: leave out --workers")
    if not 0 <= arguments.port < 65536:
        parser.error(f"--port {arguments.port} is not a TCP port (0 lets the system choose)")
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    return arguments


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one; the limit now in force.

    Every connection is an open file, and the usual soft default (1024) would turn clients
    away long before memory runs out (one process holds tens of thousands of idle
    connections). The hard limit is the administrator's (``ulimit -Hn``, systemd's
    ``LimitNOFILE``, docker's ``--ulimit nofile``): raise that one for more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # macOS refuses an unlimited soft limit: keep the soft one
        return soft
    return hard


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = get_settings()
    except SettingsError as error:
        sys.exit(f"{PACKAGE}: {error}")
    arguments = parse_arguments(settings, argv)
    workers = ServerWorkers(f"python -m {PACKAGE}", arguments.workers, "--workers or WORKERS")
    try:
        settings.check(workers)
    except SettingsError as error:
        sys.exit(f"{PACKAGE}: {error}")
    os.environ["LOG_LEVEL"] = arguments.log_level.upper()  # for the app, in every worker
{%- if metrics %}
    with metrics_shared_by_workers(settings.metrics_enabled and arguments.workers > 1):
        serve(arguments, settings)


@contextmanager
def metrics_shared_by_workers(shared: bool) -> Iterator[None]:
    """Have the workers' Prometheus metrics summed (prometheus-client's multiprocess mode).

    The folder is ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied first: the figures of a
    previous run would add up), else a temporary one, removed when the service stops. It is
    set before uvicorn starts the workers, which inherit it.
    """
    if not shared:
        yield
        return
    given = os.environ.get(MULTIPROCESS_VARIABLE)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix=f"{PACKAGE}-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink()
    os.environ[MULTIPROCESS_VARIABLE] = str(folder)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
{%- else %}
    serve(arguments, settings)
{%- endif %}


def serve(arguments: argparse.Namespace, settings: Settings) -> None:
    raise_open_file_limit()  # inherited by every worker
    uvicorn.run(
        f"{PACKAGE}.app:app",
        host=arguments.host,
        port=arguments.port,
        workers=arguments.workers,
        reload=arguments.reload,
        reload_dirs=[str(Path(__file__).parent)] if arguments.reload else None,
        log_level=arguments.log_level,
        ws=f"{PACKAGE}.websocket.uvicorn_protocol:LeanProtocol",  # websockets-sansio, leaner
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=arguments.ws_per_message_deflate,
        ws_ping_interval=arguments.ws_ping_interval or None,
        ws_ping_timeout=arguments.ws_ping_timeout or None,
        timeout_graceful_shutdown=round(arguments.shutdown_timeout) or None,
        log_config=uvicorn_log_config(settings.log_format),
    )


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration; with ``json``, its lines are JSON objects too."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        for formatter in config["formatters"].values():
            formatter.clear()
            formatter["()"] = f"{PACKAGE}.websocket.logs.JsonFormatter"
    return config


if __name__ == "__main__":
    main()
