"""uvicorn with tracemalloc on: ``python traced_server.py APP [uvicorn options]``.

For bench/memory.py. Each SIGUSR1 writes, into the folder ``$TRACE_DIR``, a tracemalloc
snapshot (``snapshot-N.pickle``) and the live objects the garbage collector tracks,
counted and sized by type (``objects-N.json``), then an empty ``done-N`` to say both are
whole. Traces keep ``$TRACE_FRAMES`` frames (default 8).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import CoroutineType, FrameType, GeneratorType

import uvicorn.main

_dumps = 0


def dump(signum: int, frame: FrameType | None) -> None:
    """Write snapshot N and the object counts N into ``$TRACE_DIR``."""
    global _dumps
    _dumps += 1
    folder = Path(os.environ["TRACE_DIR"])
    gc.collect()
    tracemalloc.take_snapshot().dump(str(folder / f"snapshot-{_dumps}.pickle"))
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for thing in gc.get_objects():
        kind = type(thing)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if isinstance(thing, CoroutineType | GeneratorType):  # which: each keeps a frame alive
            code = thing.cr_code if isinstance(thing, CoroutineType) else thing.gi_code
            name += f" {code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(thing)
    objects = {name: [counts[name], sizes[name]] for name in counts}
    (folder / f"objects-{_dumps}.json").write_text(json.dumps(objects))
    (folder / f"done-{_dumps}").touch()


if __name__ == "__main__":
    tracemalloc.start(int(os.environ.get("TRACE_FRAMES", "8")))
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main.main()
