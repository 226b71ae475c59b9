"""The mock vendor's subscriptions and what each action does to them, per idempotency mode.

Every subscription is in one of four states: ``active``, ``suspended``, ``terminated``, ``purged``.
Unknown ids come into existence as ``active`` on first sight, so generated marketplace data needs
no seeding here; ids matching ``gone_pattern`` never exist (404), and ids matching
``refuse_pattern`` exist but refuse termination (an outstanding balance). Seeding
(:meth:`VendorState.seed`) sets any id to any state and overrides both patterns.

What a *repeated* action does depends on the mode, which is the point of this mock: ``natural``
answers 409 and does nothing; every other mode acts again and the ledger records a duplicate
effect. (``key`` mode deduplicates earlier, in the HTTP layer, by Idempotency-Key; a call without a
key or with a fresh key reaches this module and acts again.)

Not thread-safe: it is driven from one event loop, and no method awaits, so each call is atomic
with respect to the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from cancel_sandbox.vendor.idempotency import KeyStore
from cancel_sandbox.vendor.ledger import Ledger, utc_now
from cancel_sandbox.vendor.persist import SqliteStore

__all__ = ["ACTIONS", "ActionResult", "Mode", "Status", "Subscription", "VendorState"]

ACTIONS = ("terminate", "suspend", "purge")
REFUSAL_MESSAGE = "Subscription has an outstanding balance; contact billing."


class Mode(str, Enum):
    KEY = "key"  # Stripe-like Idempotency-Key replay
    NATURAL = "natural"  # a repeated action answers 409 and does not act
    READ = "read"  # a repeated action acts again; the status endpoint tells the truth
    NONE = "none"  # a repeated action acts again; no status endpoint


class Status(str, Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    PURGED = "purged"


ENDED = (Status.TERMINATED, Status.PURGED)


@dataclass
class Subscription:
    id: str
    status: Status = Status.ACTIVE
    refuse: bool = False
    suspended_at: str | None = None
    terminated_at: str | None = None
    purged_at: str | None = None

    def public(self) -> dict[str, Any]:
        """The vendor API's view: id, status and the timestamps that are set."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        for name in ("suspended_at", "terminated_at", "purged_at"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subscription:
        return cls(**{**data, "status": Status(data["status"])})


@dataclass(frozen=True, slots=True)
class ActionResult:
    status_code: int
    body: dict[str, Any]


class VendorState:
    """Subscriptions, idempotency keys and the ledger, optionally written through to SQLite."""

    def __init__(
        self,
        refuse_pattern: str,
        gone_pattern: str,
        store: SqliteStore | None = None,
    ) -> None:
        self._refuse = re.compile(refuse_pattern) if refuse_pattern else None
        self._gone = re.compile(gone_pattern) if gone_pattern else None
        self._store = store
        self.ledger = Ledger(store)
        self.keys = KeyStore(store)
        self._subscriptions: dict[str, Subscription] = {}
        if store is not None:
            self._subscriptions = {
                s.id: s for s in map(Subscription.from_dict, store.load_subscriptions())
            }

    def lookup(self, sid: str) -> Subscription | None:
        """The subscription, created active on first sight; None when it does not exist."""
        sub = self._subscriptions.get(sid)
        if sub is None:
            if self._gone is not None and self._gone.search(sid):
                return None
            sub = Subscription(sid, refuse=bool(self._refuse and self._refuse.search(sid)))
            self._save(sub)
        return sub

    def get(self, sid: str) -> Subscription | None:
        """The subscription if already known; unlike :meth:`lookup`, never creates one."""
        return self._subscriptions.get(sid)

    def seed(self, sid: str, status: Status, refuse: bool | None = None) -> Subscription:
        default_refuse = bool(self._refuse and self._refuse.search(sid))
        sub = Subscription(sid, status, default_refuse if refuse is None else refuse)
        now = utc_now()
        if status is Status.SUSPENDED:
            sub.suspended_at = now
        if status in ENDED:
            sub.terminated_at = now
        if status is Status.PURGED:
            sub.purged_at = now
        self._save(sub)
        return sub

    def subscriptions(self) -> Iterable[Subscription]:
        return self._subscriptions.values()

    def reset(self) -> None:
        self._subscriptions.clear()
        self.ledger.clear()
        self.keys.clear()
        if self._store is not None:
            self._store.clear()

    def act(
        self, action: str, sid: str, mode: Mode, key: str | None, request_id: str | None
    ) -> ActionResult:
        """Apply one action; the ledger gets an effect whenever the state machine acted."""
        sub = self.lookup(sid)
        if sub is None:
            return ActionResult(404, {"error": "not_found"})
        step = {"terminate": self._terminate, "suspend": self._suspend, "purge": self._purge}[
            action
        ]
        result, acted, duplicate = step(sub, mode)
        if acted:
            self._save(sub)
            self.ledger.effect(sid, action, key, duplicate, request_id)
        return result

    def would_act(self, action: str, sid: str, mode: Mode) -> bool:
        """Whether ``action`` on ``sid`` would change anything now (tried on a copy)."""
        sub = self.lookup(sid)
        if sub is None:
            return False
        step = {"terminate": self._terminate, "suspend": self._suspend, "purge": self._purge}[
            action
        ]
        return step(replace(sub), mode)[1]

    def _terminate(self, sub: Subscription, mode: Mode) -> tuple[ActionResult, bool, bool]:
        if sub.status in ENDED:
            if mode is Mode.NATURAL:
                return ActionResult(409, {"error": "already_terminated"}), False, False
            return _ok(sub), True, True
        if sub.refuse:
            return ActionResult(422, {"error": "refused", "message": REFUSAL_MESSAGE}), False, False
        sub.status, sub.terminated_at = Status.TERMINATED, utc_now()
        return _ok(sub), True, False

    def _suspend(self, sub: Subscription, mode: Mode) -> tuple[ActionResult, bool, bool]:
        if sub.status in ENDED:
            # Not a repeat but an impossible step, in every mode.
            return ActionResult(409, {"error": "already_terminated"}), False, False
        if sub.status is Status.SUSPENDED:
            if mode is Mode.NATURAL:
                return ActionResult(409, {"error": "already_suspended"}), False, False
            return _ok(sub), True, True
        sub.status, sub.suspended_at = Status.SUSPENDED, utc_now()
        return _ok(sub), True, False

    def _purge(self, sub: Subscription, mode: Mode) -> tuple[ActionResult, bool, bool]:
        if sub.status is Status.PURGED:
            if mode is Mode.NATURAL:
                return ActionResult(409, {"error": "already_purged"}), False, False
            return _ok(sub), True, True
        if sub.status is not Status.TERMINATED:
            return ActionResult(409, {"error": "not_terminated"}), False, False
        sub.status, sub.purged_at = Status.PURGED, utc_now()
        return _ok(sub), True, False

    def _save(self, sub: Subscription) -> None:
        self._subscriptions[sub.id] = sub
        if self._store is not None:
            self._store.put_subscription(sub.as_dict())


def _ok(sub: Subscription) -> ActionResult:
    return ActionResult(200, sub.public())
