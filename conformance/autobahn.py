"""Autobahn|Testsuite cases 1-10, run by kosoku, against a rendered asgi-flavour project.

    .venv/bin/python conformance/autobahn.py
    .venv/bin/python conformance/autobahn.py --servers hypercorn --cases "1.*" "5.*"

The endpoint under test is ``/ws/raw-echo`` of the vendored backend's sample app: every frame,
text or binary, comes back as it was sent, through the vendored ``WebSocket``, ``Router`` and
``run_websocket``. (The service's own ``echo`` kind speaks JSON and answers other frames with
an error, by design, so it cannot pass byte-for-byte echo cases.) Each server runs with its
keepalive pings off, so that no ping lands in the middle of a case.

Prints a Markdown table and exits with 1 if a case fails that is not a known failure of the
server itself (``KNOWN_SERVER_FAILURES``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cookiecutter.main import cookiecutter
from kosoku import FailureError, run_fuzzingclient

TEMPLATE = Path(__file__).resolve().parent.parent
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]  # there is no 8.x
SERVERS = {
    "uvicorn, websockets-sansio": (
        "uvicorn",
        ["--ws", "websockets-sansio", "--ws-ping-interval", "0"],
    ),
    "uvicorn, LeanProtocol (the runner's)": (
        "uvicorn",
        ["--ws", "ws_service.websocket.uvicorn_protocol:LeanProtocol", "--ws-ping-interval", "0"],
    ),
    "uvicorn, wsproto": ("uvicorn", ["--ws", "wsproto", "--ws-ping-interval", "0"]),
    "hypercorn": ("hypercorn", []),
}
WEBSOCKETS_7_1_5 = (
    "the websockets protocol layer answers a close frame that arrives in the middle of a "
    "fragmented message with 1002 'incomplete fragmented message' where the case wants "
    "1000; the frames never reach the app"
)
KNOWN_SERVER_FAILURES = {
    ("uvicorn, websockets-sansio", "7.1.5"): WEBSOCKETS_7_1_5,
    ("uvicorn, LeanProtocol (the runner's)", "7.1.5"): WEBSOCKETS_7_1_5,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--cases", nargs="+", default=CASES, help="kosoku case ids or globs")
    args = parser.parse_args()

    output = Path(tempfile.mkdtemp(prefix="ws-template-autobahn-"))
    answers = {"framework": "asgi"}
    project = Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output), extra_context=answers)
    )
    sys.path.insert(0, str(project))
    testing = importlib.import_module("ws_service.websocket.testing")

    rows, unexpected = [], []
    for name in args.servers:
        server, server_args = SERVERS[name]
        app = "ws_service.websocket.tests.sample_asgi_app:app"
        with testing.LiveServer(app, server=server, args=server_args, cwd=project) as live:
            started = time.monotonic()
            try:
                results = asyncio.run(run_fuzzingclient(live.ws_url("/ws/raw-echo"), args.cases))
            except FailureError as failure:
                results = failure.results
            seconds = time.monotonic() - started
        verdicts = Counter(result.behavior.value for result in results)
        failed = [result for result in results if not result.passed]
        known = [r for r in failed if (name, r.case_id) in KNOWN_SERVER_FAILURES]
        unexpected += [(name, r) for r in failed if (name, r.case_id) not in KNOWN_SERVER_FAILURES]
        rows.append(
            f"| {name} | {len(results)} | {len(results) - len(failed)} | {verdicts['OK']} | "
            f"{verdicts['NON-STRICT']} | {verdicts['INFORMATIONAL']} | "
            f"{', '.join(r.case_id for r in known) or '-'} | "
            f"{', '.join(r.case_id for r in failed if r not in known) or '-'} | {seconds:.0f} s |"
        )

    columns = "server, cases, passed, OK, non-strict, informational, known server failures, other failures, time"
    print(f"| {' | '.join(columns.split(', '))} |")
    print("|" + " --- |" * len(columns.split(", ")))
    print("\n".join(rows))
    for (name, case), reason in KNOWN_SERVER_FAILURES.items():
        if name in args.servers:
            print(f"\nKnown: {name}, case {case}: {reason}.")
    for name, result in unexpected:
        print(
            f"\nFAILED: {name}, case {result.case_id} ({result.description}): "
            f"{result.behavior.value} / {result.behavior_close.value}: {result.result_close}"
        )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
