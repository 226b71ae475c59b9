"""Checks and warnings before ``run`` starts: each names the key to change, instead of a failure
from deep inside later (SQLite's "unable to open database file", uvicorn's "did not start").

- :func:`journal_directory`: an SQLite journal's directory exists and this user can write there;
- :func:`start_ops`: the ops server's address is free ("address in use" says so);
- :func:`warn_at_start`: a clear-text Connect endpoint allowed by ``connect.allow_insecure``, a
  Connect read timeout cut to stay under the shutdown budget;
- :func:`warn_slow_adapters`: a vendor read timeout as long as the shutdown budget.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from processor.config.schema import Config, ConfigError

__all__ = ["journal_directory", "start_ops", "warn_at_start", "warn_slow_adapters"]


def warn_at_start(config: Config) -> None:
    """What an operator allowed but should hear about at every start."""
    from processor.daemon.runtime import read_timeout
    from processor.observe import get_logger

    log = get_logger(component="cli")
    if config.connect.insecure:
        log.warning(
            "connect_insecure",
            endpoint=config.connect.endpoint,
            detail="connect.allow_insecure is true: the API key travels in clear text over http://",
        )
    if read_timeout(config) < config.connect.timeout_read:
        log.warning(
            "connect_read_timeout_shortened",
            configured=config.connect.timeout_read,
            used=read_timeout(config),
            detail="connect.timeout_read must stay under "
            "processing.shutdown_timeout, so that a stop never waits out a read",
        )


def warn_slow_adapters(config: Config, adapters: dict[str, Any]) -> None:
    """A vendor read timeout as long as the shutdown budget: a stop may cut such a call off (the
    journal resumes it), so say which setting to shorten."""
    from processor.observe import get_logger

    for name, adapter in adapters.items():
        timeout = getattr(getattr(adapter, "settings", None), "timeout", None)
        if (
            isinstance(timeout, tuple)
            and len(timeout) == 2
            and timeout[1] >= config.processing.shutdown_timeout
        ):
            get_logger(component="cli").warning(
                "vendor_read_timeout_too_long",
                adapter=name,
                read_timeout=timeout[1],
                shutdown_timeout=config.processing.shutdown_timeout,
                detail=f"set adapters.{name}.options.timeout.read below "
                "processing.shutdown_timeout: a call still waiting at a stop is cut off and "
                "resumed from the journal on the next start",
            )


def journal_directory(config: Config) -> None:
    """An SQLite journal's directory must exist and be writable: said before anything starts, with
    the key to change, instead of SQLite's "unable to open database file" from deep inside."""
    url = config.journal.url
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return
    path = os.path.abspath(url[len("sqlite:///") :])
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ConfigError(
            config.source,
            "journal.url",
            f"the directory {directory} does not exist: create it or point journal.url elsewhere",
        )
    if os.path.exists(path):
        writable = os.access(path, os.R_OK | os.W_OK) and os.access(directory, os.W_OK | os.X_OK)
    else:
        writable = os.access(directory, os.W_OK | os.X_OK)
    if not writable:
        raise ConfigError(
            config.source,
            "journal.url",
            f"{path} cannot be written by this user (directory "
            f"{directory}): fix its permissions or point journal.url elsewhere",
        )


def start_ops(config: Config, ops: Any) -> None:
    """Start the ops server; a port in use is a configuration error that says so."""
    host, port = config.http.host, config.http.port
    if port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                what = (
                    "address in use"
                    if exc.errno == errno.EADDRINUSE
                    else (exc.strerror or str(exc))
                )
                raise ConfigError(
                    config.source,
                    "http.port",
                    (
                        f"cannot serve on {host}:{port}: {what}; choose a free http.port (or "
                        "CANCEL_PROCESSOR_HTTP__PORT), or set http.enabled: false"
                    ),
                ) from None
    try:
        ops.start()
    except RuntimeError as exc:
        raise ConfigError(
            config.source,
            "http",
            f"the ops server on {host}:{port} did not start ({exc}); "
            "choose another http.host or http.port, or set http.enabled: false",
        ) from None
