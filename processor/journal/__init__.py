"""Journal stores, chosen by the URL scheme of one setting (stores are imported only when used).

=================================  ==========================================================
``sqlite:///relative/path.db``     a file relative to the working directory
``sqlite:////absolute/path.db``    an absolute path (four slashes)
``sqlite:///:memory:``             one in-memory database on one shared connection (tests)
``postgresql://...``               PostgreSQL through a psycopg connection pool
``postgres://...``                 the same
=================================  ==========================================================

``options`` go to the store's constructor: SQLite takes ``busy_timeout``, ``connections`` and
``auto_migrate``; PostgreSQL takes ``pool_size``, ``min_size``, ``schema`` and ``connect_timeout``.
The pool sizes are ignored for SQLite, so one configuration serves either URL; any other option a
store does not know raises :class:`TypeError`.

A URL may carry a password: every message here shows it through :func:`redact_url`, and a store's
``url`` attribute holds the redacted form, safe to log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from processor.journal.base import Journal

__all__ = ["open_journal", "open_existing", "redact_url", "SCHEMES"]

SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:, "
    "postgresql://..., postgres://..."
)
_POSTGRES_OPTIONS = frozenset({"pool_size", "min_size", "stall_timeout"})


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user info and in a ``password=``
    query)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if ":" not in url and "@" not in url else "<unparsable URL>"
    authority, qmark, query = rest.partition("?")
    # The last "@" ends the user info: an unencoded "@" or "/" in a password must not leak its tail.
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    if qmark:
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(
            f"{k}={'***' if k.lower() == 'password' else v}" if eq else k for k, eq, v in pairs
        )
    return f"{scheme}://{authority}{qmark}{query}"


def open_journal(url: str, *, clock: Callable[[], Any] | None = None, **options: Any) -> Journal:
    """The store for ``url`` (see the module docstring). Raises :class:`ValueError` for an unknown
    scheme or a malformed SQLite URL; connection failures surface as :class:`JournalError`."""
    scheme = url.partition("://")[0] if "://" in url else ""
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ValueError(
                f"malformed SQLite journal URL {redact_url(url)!r}: expected {_ACCEPTED}"
            )
        from processor.journal.sqlite import sqlite_journal

        sqlite_options = {k: v for k, v in options.items() if k not in _POSTGRES_OPTIONS}
        return sqlite_journal(url[len("sqlite:///") :], url=url, **extra, **sqlite_options)
    if scheme in ("postgresql", "postgres"):
        from processor.journal.postgres import postgres_journal

        return postgres_journal(url, **extra, **options)
    named = f"scheme {scheme!r}" if scheme else "no scheme"
    raise ValueError(f"journal URL {redact_url(url)!r} has {named}; accepted: {_ACCEPTED}")


@contextlib.contextmanager
def open_existing(url: str, source: Any) -> Iterator[Journal]:
    """The journal at ``url`` for reading and operator commands, never creating one: a missing
    SQLite file (a mistyped path, most often) is a :class:`ConfigError` naming ``journal.url`` of
    ``source``, and a schema that is not current is refused before anything is read."""
    from processor.config.schema import ConfigError

    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else None
    if path is not None and path != ":memory:" and not Path(path).exists():
        raise ConfigError(
            source,
            "journal.url",
            f"no journal at {path} (run the processor, or "
            "`cancel-processor journal migrate`, to create one)",
        )
    journal = open_journal(url)
    try:
        journal.check_schema()
        yield journal
    finally:
        journal.close()
