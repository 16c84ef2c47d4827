"""ws-template's benchmark: the generated service against hand-written baselines (issue 7).

Run it with ``.venv/bin/python bench/run.py`` (``--help`` for the options, ``--smoke`` for a
run of seconds). The modules: ``servers`` renders the template and starts each server,
``loadgen`` drives the node load generator ``client.mjs`` and samples ``/proc``,
``workloads`` measures one workload against one server, ``report`` writes the table and
the plots, ``run`` is the command that ties them together.
"""
