"""The error every query problem becomes (a 400 ``VAL_001`` with its message)."""

from __future__ import annotations

__all__ = ["RQLError"]


class RQLError(ValueError):
    """A query the mock refuses: answered 400 ``VAL_001`` with this message."""
