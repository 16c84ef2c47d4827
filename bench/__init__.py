"""ws-template's benchmark: the generated service against hand-written baselines (issue 7).

Run it with ``.venv/bin/python bench/run.py`` (``--help`` for the options, ``--smoke`` for a
run of seconds). The modules: ``servers`` renders the template and starts each server,
``loadgen`` drives the node load generator ``client.mjs`` and samples ``/proc``,
``workloads`` measures one workload against one server, ``report`` writes the table and
the plots, ``run`` is the command that ties them together.
"""

import sys
from pathlib import Path

# The vendored backend (``websocket``), importable as the template's tests have it (the
# pythonpath of pytest's settings): the benchmark uses its RedisServer.
_VENDORED = Path(__file__).resolve().parent.parent / "{{cookiecutter.project_slug|ws_folder_name}}"
_VENDORED_PACKAGE = _VENDORED / "{{cookiecutter.package_name}}"
if str(_VENDORED_PACKAGE) not in sys.path:
    sys.path.append(str(_VENDORED_PACKAGE))
