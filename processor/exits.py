"""The one table of exit statuses, shared by every command (``run``, ``check``, ``status``,
``report``, ``reconcile``...) and documented in README.md's "Exit statuses" table.

A backfill script reads these: 0 only when the work is done, 2 when the operator must change
something (a file, a variable, an option, the API key, a product id), 3 when a dependency cannot
be reached (Connect, the journal's database), 1 for work left unfinished (or, for ``reconcile``,
divergences found) and anything unexpected.
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_UNFINISHED", "EXIT_CONFIG", "EXIT_UNREACHABLE", "for_journal"]

EXIT_OK = 0
EXIT_UNFINISHED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def for_journal(url: str | None) -> int:
    """The status for a journal that cannot be used: a SQLite file is the operator's path to fix
    (2); a database server that does not answer is a dependency out of reach (3)."""
    return EXIT_CONFIG if (url or "").startswith("sqlite") else EXIT_UNREACHABLE
