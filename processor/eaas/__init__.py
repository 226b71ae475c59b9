"""The processor as a Connect EaaS extension (connect-eaas-core events application).

- :mod:`.app` — :class:`CancelEventsApplication`: ``asset_cancel_request_processing`` tasks through
  the engine, how the engine's results become task responses, and the ``run_due_timers``
  schedulable;
- :mod:`.runtimes` — the journal, adapters, gateway and engine built once per configuration and
  shared by tasks (the runner makes a new application object per task);
- :mod:`.variables` — the extension variables and the processor configuration they describe;
- :mod:`.maintenance` — what the schedulable runs: due timers, stranded claims, owed notes;
- ``extension.json`` — the descriptor connect-eaas-core reads next to the application's module.

The entry point (group ``connect.eaas.ext``, name ``eventsapp``) names
``processor.eaas.app:CancelEventsApplication``. Importing this package imports nothing from
connect-eaas-core; :mod:`.app` does.
"""
