"""`server_workers` reads the number of workers from the server's own configuration.

Each test makes the configuration object a server's worker holds; the projects' own tests
start the real servers with several workers (``tests/test_runner.py``).
"""

from __future__ import annotations

import gc

import pytest
import uvicorn

from ..workers import ServerWorkers, server_workers


@pytest.fixture(autouse=True)
def no_configuration_left() -> None:
    gc.collect()  # the configurations of the tests before, if cycles hold them


def test_uvicorn_workers_are_read_from_its_config() -> None:
    config = uvicorn.Config("app:app", workers=3)
    assert server_workers() == ServerWorkers("uvicorn", 3, "--workers or WEB_CONCURRENCY")
    del config


def test_uvicorn_reloading_is_one_worker_whatever_workers_says() -> None:
    config = uvicorn.Config("app:app", workers=3, reload=True)
    found = server_workers()
    assert found is not None
    assert found.workers == 1
    del config


def test_web_concurrency_counts_as_uvicorn_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    config = uvicorn.Config("app:app")
    found = server_workers()
    assert found is not None
    assert found.workers == 4
    del config


def test_the_most_workers_of_every_live_configuration_count() -> None:
    gunicorn_config = pytest.importorskip("gunicorn.config")
    gunicorn = gunicorn_config.Config()
    gunicorn.set("workers", 5)
    uvicorn_worker = uvicorn.Config("app:app")  # what uvicorn's gunicorn worker class holds
    found = server_workers()
    assert found is not None
    assert (found.server, found.workers) == ("gunicorn", 5)
    del gunicorn, uvicorn_worker


def test_hypercorn_workers_are_read_from_its_config() -> None:
    hypercorn_config = pytest.importorskip("hypercorn.config")
    config = hypercorn_config.Config()
    config.workers = 2
    found = server_workers()
    assert found is not None
    assert (found.server, found.workers) == ("hypercorn", 2)
    del config


def test_without_a_server_configuration_there_is_nothing_to_tell() -> None:
    found = server_workers()
    assert found is None or found.workers == 1, found


def test_the_description_says_where_the_number_came_from() -> None:
    assert str(ServerWorkers("uvicorn", 2, "--workers or WEB_CONCURRENCY")) == (
        "uvicorn was started with 2 worker processes (--workers or WEB_CONCURRENCY)"
    )
