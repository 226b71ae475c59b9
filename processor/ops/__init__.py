"""Operating the processor: the ops HTTP server (health, readiness, metrics, status page) and the
operator commands (``status``, ``report``, ``retry``, ``park``, ``journal export``).

Modules, imported on use (the CLI commands need neither Starlette nor uvicorn):

- :mod:`processor.ops.server` -- ``create_ops_app``, ``OpsServer``, ``build_ops_server``
- :mod:`processor.ops.readiness` -- ``make_readiness``, ``CachedCheck``, ``is_ready``
- :mod:`processor.ops.commands` -- the ``Command`` objects the CLI adds as subcommands
- :mod:`processor.ops.guard` -- token, size limits and the loopback host check (pure ASGI)
- :mod:`processor.ops.page`, :mod:`processor.ops.output` -- HTML pages; tables, CSV, JSON
- :mod:`processor.ops.listing`, :mod:`processor.ops.actions` -- what is shown; what an operator may
  do
"""
