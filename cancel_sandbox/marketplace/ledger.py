"""The effects ledger: every state change the marketplace made, in order, with who made it.

Tests and benchmarks read it (``GET /admin/ledger``) to learn what really happened, independently
of what a client believed (a dropped response still leaves its entry here). Entries carry the
actor's *key identifier* (``SU-000-000-000``), never a secret; the web page acts as ``ui``, admin
routes as ``admin`` and the clock (scheduled requests falling due) as ``system``.

Sequence numbers start at 1 and never repeat, also across restarts with a state file. Seeding is
recorded as one ``seeded`` entry, not one per generated object, so a 100,000-request seed does
not double the memory it costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Entry", "Ledger"]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: str  # ISO 8601 to the microsecond, on the marketplace's clock (objects carry whole seconds)
    actor: str  # key identifier, "ui", "admin" or "system"
    kind: str  # request | asset | conversation | marketplace
    id: str  # the object's id
    event: str  # created | status | assigned | updated | message | seeded
    before: str | None = None
    after: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "kind": self.kind,
            "id": self.id,
            "event": self.event,
            "from": self.before,
            "to": self.after,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Entry:
        return cls(
            seq=doc["seq"],
            at=doc["at"],
            actor=doc["actor"],
            kind=doc["kind"],
            id=doc["id"],
            event=doc["event"],
            before=doc.get("from"),
            after=doc.get("to"),
            detail=doc.get("detail"),
        )


class Ledger:
    """Append-only, in memory; ``on_append`` lets persistence write each entry through.

    The ledger stamps each entry itself, from ``clock``, to the microsecond: the objects carry
    Connect's whole seconds, and a benchmark that times a thousand approvals from those would read
    a rate off by a fifth.
    """

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        on_append: Callable[[Entry], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._entries: list[Entry] = list(entries)
        self._on_append = on_append
        self._clock = clock

    @property
    def last_seq(self) -> int:
        return self._entries[-1].seq if self._entries else 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(
        self,
        actor: str,
        kind: str,
        object_id: str,
        event: str,
        *,
        before: str | None = None,
        after: str | None = None,
        detail: str | None = None,
    ) -> Entry:
        at = self._clock().astimezone(UTC).isoformat()
        entry = Entry(self.last_seq + 1, at, actor, kind, object_id, event, before, after, detail)
        self._entries.append(entry)
        if self._on_append is not None:
            self._on_append(entry)
        return entry

    def since(self, seq: int = 0, limit: int = 1000, object_id: str | None = None) -> list[Entry]:
        """Entries with a sequence number above ``seq``, oldest first, at most ``limit``."""
        # Sequence numbers are dense from 1, so the position of seq+1 is seq - first + 1.
        first = self._entries[0].seq if self._entries else 1
        start = max(0, seq - first + 1)
        out: list[Entry] = []
        for index in range(start, len(self._entries)):
            entry = self._entries[index]
            if object_id is not None and entry.id != object_id:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out
