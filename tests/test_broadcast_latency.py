"""Broadcast delivery latency for 1,000 subscribers, in memory and through Redis.

The figures are measured on a real server (see broadcast_latency.py), written to
build/broadcast/ and printed at the end of the run; they are not judged, since they depend
on the machine. What is asserted is that every subscriber got every message, in order.
"""

from __future__ import annotations

import json

import pytest

from tests.broadcast_latency import run
from tests.conftest import TEMPLATE, require_redis

SUBSCRIBERS = 1000
MESSAGES = 50


@pytest.mark.xdist_group("broadcast-latency")  # one backend at a time, on one worker
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_broadcast_latency_is_measured_with_every_message_delivered_in_order(
    backend: str,
) -> None:
    if backend == "redis":
        require_redis()
    figures = run(backend, SUBSCRIBERS, MESSAGES)
    folder = TEMPLATE / "build" / "broadcast"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"latency-{backend}.json").write_text(json.dumps(figures))
    assert figures["deliveries"] == SUBSCRIBERS * MESSAGES
    assert figures["out_of_order"] == 0
