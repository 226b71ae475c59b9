"""What the SQLite and PostgreSQL stores share: checking the fields a claim may change, turning rows
into records, and time.

Both stores accept exactly the same input and return exactly the same records, so the checks live
here once. Every check raises :class:`ValueError` *before* a transaction opens: a programming error
must never be mistaken for a lost lease or an unreachable database.

**Any text can be stored.** Text reaches the journal from outside (a vendor's refusal reason, an
error a server sent, a customer's ids), and a Python string may hold what no store takes: NUL
(PostgreSQL's text and jsonb refuse it) and a lone surrogate (not Unicode at all: neither driver
can encode it). :func:`storable` replaces both with U+FFFD, and every value a connector binds goes
through :func:`storable_params` (``data`` through :func:`data_json`), so a hostile answer costs a
replacement character, never a failed write after a vendor call.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, Protocol

from processor.journal.base import RequestRecord, State, Transition

__all__ = [
    "Clock",
    "Row",
    "MUTABLE_FIELDS",
    "COLUMNS",
    "utcnow",
    "aware_utc",
    "check_fields",
    "check_lease_seconds",
    "check_limit",
    "state_names",
    "data_json",
    "storable",
    "storable_params",
    "record_from_row",
    "transition_from_row",
]

Clock = Callable[[], datetime]


class Row(Protocol):
    """A row as a driver returns it, its columns read by name (``sqlite3.Row``, psycopg's dicts)."""

    def __getitem__(self, key: str, /) -> Any: ...


# The columns a claim holder may change (``transition``/``update``). Identifiers other than the
# subscription are fixed at ``ensure``; fence and lease belong to claim/renew/release/force.
MUTABLE_FIELDS = frozenset(
    {
        "attempts",
        "next_attempt_at",
        "outcome",
        "reason",
        "last_error",
        "noted",
        "data",
        "subscription_id",
    }
)
COLUMNS = tuple(f.name for f in dataclass_fields(RequestRecord))
_TEXT_FIELDS = ("outcome", "reason", "last_error", "noted", "subscription_id")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware_utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC. A naive datetime is refused: its meaning depends on the machine's zone."""
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` with NUL and lone surrogates replaced by U+FFFD in every string it holds (keys
    included); anything else as it is. A Python string never holds a valid surrogate pair (the
    pair is one code point), so every surrogate found is a lone one."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, Mapping):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


def storable_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters as a connector binds them: every string made storable."""
    if not params:
        return {}
    return {k: storable(v) if isinstance(v, str) else v for k, v in params.items()}


def data_json(data: Mapping[str, Any]) -> str:
    """``data`` as JSON text, its strings made storable; what JSON cannot hold (datetimes, NaN,
    sets) is refused, not mangled."""
    if not isinstance(data, Mapping):
        raise ValueError(f"data must be a mapping, got {type(data).__name__}")
    try:
        return json.dumps(storable(dict(data)), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data must be JSON-serializable: {exc}") from None


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, normalised subset of ``fields`` a transition writes. Unknown names are
    refused."""
    unknown = sorted(set(fields) - MUTABLE_FIELDS)
    if unknown:
        settable = ", ".join(sorted(MUTABLE_FIELDS))
        raise ValueError(
            f"cannot set {', '.join(unknown)} on a journal record; settable: {settable}"
        )
    checked = dict(fields)
    if "attempts" in checked:
        attempts = checked["attempts"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise ValueError(f"attempts must be a non-negative int, got {attempts!r}")
    if checked.get("next_attempt_at") is not None:
        checked["next_attempt_at"] = aware_utc(checked["next_attempt_at"], "next_attempt_at")
    if "data" in checked:
        # Refuse now what the database would refuse later; keep what a read will return (JSON's
        # own types: lists for tuples, text keys), so the record a write answers is built from it.
        checked["data"] = dict(json.loads(data_json(checked["data"])))
    for name in _TEXT_FIELDS:
        value = checked.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a str or None, got {type(value).__name__}")
        if value is not None:
            checked[name] = storable(value)  # the record a write answers holds what was stored
    return checked


def check_lease_seconds(lease_seconds: float) -> float:
    if (
        not isinstance(lease_seconds, (int, float))
        or not math.isfinite(lease_seconds)
        or lease_seconds <= 0
    ):
        raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}")
    return float(lease_seconds)


def check_limit(limit: int | None, what: str = "limit") -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"{what} must be a non-negative int or None, got {limit!r}")
    return limit


def state_names(states: Sequence[State] | None) -> list[str] | None:
    """``states`` as their stored names (``State(...)`` refuses an unknown one), or None for
    "any"."""
    if states is None:
        return None
    if isinstance(
        states, (str, State)
    ):  # a lone state is a common slip; it would iterate as letters
        raise ValueError("states must be a sequence of State, not a single state")
    return [State(s).value for s in states]


def record_from_row(
    row: Row,
    *,
    time: Callable[[Any], datetime | None],
    data: Callable[[Any], dict[str, Any]],
) -> RequestRecord:
    """A :class:`RequestRecord` from a row with every column; ``time``/``data`` decode the
    store's types."""
    values = {name: row[name] for name in COLUMNS}
    values["state"] = State(values["state"])
    for name in ("lease_expires_at", "next_attempt_at", "created_at", "updated_at"):
        values[name] = time(values[name])
    values["data"] = data(values["data"])
    return RequestRecord(**values)


def transition_from_row(row: Row, *, time: Callable[[Any], datetime | None]) -> Transition:
    at = time(row["at"])
    assert at is not None  # NOT NULL in both schemas
    return Transition(
        request_id=row["request_id"],
        from_state=State(row["from_state"]) if row["from_state"] is not None else None,
        to_state=State(row["to_state"]),
        fence=row["fence"],
        at=at,
        owner=row["owner"],
        detail=row["detail"],
    )
