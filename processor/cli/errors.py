"""One error style for the whole CLI: one line naming what failed, where, and what to do.

Exit statuses (the one table is :mod:`processor.exits`): 2 for configuration and usage (the
operator changes a file, a variable or an option), 3 for a dependency that cannot be reached
(Connect, the journal's database), 1 for work left unfinished and for anything unexpected. No
traceback unless ``--debug`` (or ``CANCEL_PROCESSOR_DEBUG=1``) asks for it. Every line goes
through the log masking, so a secret echoed by a server or put in the wrong place never reaches
the terminal.

:class:`Where` carries what the command knew when it failed (the configuration file, Connect's
URL, the journal's URL without password), so the line can say where to look.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from processor.config.schema import ConfigError
from processor.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNFINISHED, EXIT_UNREACHABLE
from processor.observe import mask

__all__ = [
    "Where",
    "explain",
    "EXIT_OK",
    "EXIT_UNFINISHED",
    "EXIT_CONFIG",
    "EXIT_UNREACHABLE",
    "UsageError",
]

PROG = "cancel-processor"


class UsageError(Exception):
    """An option or an argument the command cannot use (exit 2); the message says which and why."""


@dataclass
class Where:
    source: str = "<defaults>"  # the configuration file, or "<defaults>"
    endpoint: str | None = None  # Connect's URL
    journal: str | None = None  # the journal URL, password redacted
    api_key_env: str = "CONNECT_API_KEY"


def explain(exc: BaseException, where: Where) -> tuple[str, int]:
    """The one line for ``exc`` and the exit status."""
    line, status = _explain(exc, where)
    return mask(f"{PROG}: {line}"), status


def _explain(exc: BaseException, where: Where) -> tuple[str, int]:
    from processor.journal.base import JournalError, JournalFull, SchemaError
    from processor.marketplace.errors import (
        MarketplaceError,
        NotFound,
        TransientError,
        Unauthorized,
    )

    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}", EXIT_CONFIG
    if isinstance(exc, UsageError):
        return f"usage error: {exc}", EXIT_CONFIG
    connect = where.endpoint or "Connect"
    if isinstance(exc, Unauthorized):
        names = "CONNECT_API_KEY" + (
            f" (or {where.api_key_env})" if where.api_key_env != "CONNECT_API_KEY" else ""
        )
        return (
            f"Connect at {connect} rejected the API key (HTTP 401): set {names} to a valid key "
            "for this endpoint",
            EXIT_CONFIG,
        )
    if isinstance(exc, NotFound):
        return (
            f"Connect at {connect} answered 404 ({exc}): check connect.endpoint in {where.source} "
            "(it ends with /public/v1)",
            EXIT_CONFIG,
        )
    if isinstance(exc, TransientError):
        if exc.cause == "bad_response":
            return (
                f"Connect at {connect} answered something that is not Connect's API (no JSON): "
                f"check connect.endpoint in {where.source} (it ends with /public/v1)",
                EXIT_UNREACHABLE,
            )
        return (
            f"Connect at {connect} is unreachable: {exc}; check connect.endpoint in "
            f"{where.source} and the network, then run again",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, MarketplaceError):
        return f"Connect at {connect} refused: {exc}", EXIT_UNREACHABLE
    journal = where.journal or "the journal"
    if isinstance(exc, SchemaError):
        return f"{exc} (configuration: {where.source})", EXIT_CONFIG
    if isinstance(exc, JournalFull):
        return (
            f"journal {journal} cannot be written: {exc}; free disk space where it lives, then "
            "run again",
            EXIT_UNFINISHED,
        )
    if isinstance(exc, JournalError) and journal.startswith("sqlite"):
        return (
            f"journal {journal} cannot be used: {exc}; journal.url in {where.source} must name a "
            "file this user can create and write",
            EXIT_CONFIG,
        )
    if isinstance(exc, JournalError):
        return (
            f"journal {journal} cannot be used: {exc}; check journal.url in {where.source} and "
            "that the database is up",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"{exc.filename or 'a file'}: permission denied ({exc.strerror}): check the paths in "
            f"{where.source}",
            EXIT_CONFIG,
        )
    return (
        f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        EXIT_UNFINISHED,
    )
