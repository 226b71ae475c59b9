"""The mock vendor's ledger: every raw call it answered, and every effective change it made.

The two lists differ exactly where the processor's correctness shows: a retried call with a
replayed Idempotency-Key is a *call* but no *effect*; a call whose connection was dropped after
the change (fault injection) is an effect the client never saw confirmed; a terminate that acted
on an already terminated subscription is an effect marked ``duplicate`` — the thing a correct
processor never causes.

Calls rejected by the fault middleware before they reach the app (injected 503/429) are not calls
here; the summary reports them from the middleware's own counters. The lists grow without bound
(about 300 bytes an entry): fine for a benchmark of 100,000 requests, not for a long-lived server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cancel_sandbox.vendor.persist import SqliteStore

__all__ = ["Call", "Effect", "Ledger", "utc_now"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Call:
    seq: int
    at: str
    method: str
    path: str
    subscription_id: str | None
    action: str  # terminate | suspend | purge | status | poll
    idempotency_key: str | None
    status_code: int
    replayed: bool
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    seq: int
    at: str
    subscription_id: str
    action: str  # terminate | suspend | purge
    idempotency_key: str | None
    duplicate: bool  # the subscription was already in the state this action leads to
    request_id: str | None = None


class Ledger:
    def __init__(self, store: SqliteStore | None = None) -> None:
        self._store = store
        self.calls: list[Call] = []
        self.effects: list[Effect] = []
        if store is not None:
            self.calls = [Call(**row) for row in store.load_calls()]
            self.effects = [Effect(**row) for row in store.load_effects()]

    def call(
        self,
        method: str,
        path: str,
        subscription_id: str | None,
        action: str,
        idempotency_key: str | None,
        status_code: int,
        replayed: bool = False,
        request_id: str | None = None,
    ) -> Call:
        entry = Call(
            len(self.calls) + 1,
            utc_now(),
            method,
            path,
            subscription_id,
            action,
            idempotency_key,
            status_code,
            replayed,
            request_id,
        )
        self.calls.append(entry)
        if self._store is not None:
            self._store.add_call(asdict(entry))
        return entry

    def effect(
        self,
        subscription_id: str,
        action: str,
        idempotency_key: str | None,
        duplicate: bool,
        request_id: str | None = None,
    ) -> Effect:
        entry = Effect(
            len(self.effects) + 1,
            utc_now(),
            subscription_id,
            action,
            idempotency_key,
            duplicate,
            request_id,
        )
        self.effects.append(entry)
        if self._store is not None:
            self._store.add_effect(asdict(entry))
        return entry

    def clear(self) -> None:
        self.calls.clear()
        self.effects.clear()

    def summary(self) -> dict[str, Any]:
        terminations = [e for e in self.effects if e.action == "terminate"]
        per_subscription = Counter(e.subscription_id for e in terminations)
        # Terminate calls the vendor took (2xx, not a replay of an earlier answer) beyond the
        # first for their subscription: a client that sends a step it sent before.
        taken = Counter(
            c.subscription_id
            for c in self.calls
            if c.action == "terminate" and 200 <= c.status_code < 300 and not c.replayed
        )
        return {
            "calls": len(self.calls),
            "terminate_calls": sum(c.action == "terminate" for c in self.calls),
            "repeated_terminate_calls": sum(n - 1 for n in taken.values()),
            "polls": sum(c.action == "poll" for c in self.calls),
            "replayed_calls": sum(c.replayed for c in self.calls),
            "calls_by_status": {
                str(k): v for k, v in sorted(Counter(c.status_code for c in self.calls).items())
            },
            "refusals": sum(
                c.action == "terminate" and c.status_code == 422 and not c.replayed
                for c in self.calls
            ),
            "effects": len(self.effects),
            "effective_terminations": len(terminations),
            "duplicate_terminations": sum(e.duplicate for e in terminations),
            "subscriptions_terminated": len(per_subscription),
            "subscriptions_terminated_more_than_once": sum(
                n > 1 for n in per_subscription.values()
            ),
            "suspensions": sum(e.action == "suspend" for e in self.effects),
            "purges": sum(e.action == "purge" for e in self.effects),
            "duplicate_effects": sum(e.duplicate for e in self.effects),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": [asdict(c) for c in self.calls],
            "effects": [asdict(e) for e in self.effects],
            "summary": self.summary(),
        }
