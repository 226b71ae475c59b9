"""Late application: a vendor that applies a call after its client stopped waiting.

Behind a gateway this is common: the gateway gives up after its timeout and answers ``504``
(or the client's own timeout fires first), while the vendor's backend goes on and applies the
change seconds or minutes later. A processor that reads "active" in between and calls again
terminates twice (mode ``read``), and only an apply horizon (how long a received call may take to
be applied) makes a status read trustworthy again.

With ``delay`` > 0 every mutating call (terminate, suspend, purge) that would change something
is *received* -- its idempotency key reserved in mode ``key`` -- and *applied* ``delay`` (+ up to
``jitter``) seconds later, by :meth:`LateApplier.run`, whatever happened to the client. A call that
would change nothing (a refusal, an unknown subscription, a repeat) is answered at once, as a
gateway passes on a quick answer: the slow part is the work. The client of a late call gets, at
once:

- ``answer="504"``: ``504 gateway_timeout`` (a gateway in front of the vendor gave up);
- ``answer="hang"``: nothing until the application, then the result: a client whose timeout is
  shorter sees a timeout, one that waits sees the answer.

Pending applications are part of the vendor's state: with a state file they survive a restart
(and are applied when due after it, their keys reserved again), ``GET /admin/late`` lists them,
``POST /admin/apply`` applies every pending one now, and an admin reset drops them. Each
application goes through the same state machine as an immediate call, so the ledger counts its
effect, and a duplicate effect, exactly as it would any other.

What this does not model: a vendor that drops a received call without applying it (it is always
applied), applications out of order for one subscription beyond their due times, and a gateway
that retries on its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from cancel_sandbox.vendor.idempotency import KeyStore
from cancel_sandbox.vendor.persist import SqliteStore
from cancel_sandbox.vendor.state import ActionResult, Mode, VendorState

__all__ = ["ANSWERS", "LateApplier", "LateSettings", "Pending"]

ANSWERS = ("504", "hang")
_TICK = 0.05  # seconds between looks for due applications


@dataclass
class LateSettings:
    delay: float = 0.0  # seconds from receipt to application; 0: applied at once (no lateness)
    jitter: float = 0.0  # up to this many more seconds, uniformly
    answer: str = "504"  # what the client gets at once: see the module docstring

    @property
    def on(self) -> bool:
        """Whether calls are applied late at all."""
        return self.delay > 0 or self.jitter > 0

    def validate(self) -> None:
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise ValueError(f"late {name} must be a number of seconds from 0 to 3600")
        if self.answer not in ANSWERS:
            raise ValueError(f"late answer must be one of {', '.join(ANSWERS)}")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> LateSettings:
        unknown = set(data) - {"delay", "jitter", "answer"}
        if unknown:
            raise ValueError(f"unknown late settings: {', '.join(sorted(unknown))}")
        made = cls(**data)
        made.validate()
        return made


@dataclass
class Pending:
    seq: int
    due: float  # wall-clock epoch seconds: a restarted vendor keeps the same due time
    action: str
    sid: str
    mode: str
    key: str | None
    fingerprint: str | None
    request_id: str | None
    done: asyncio.Event | None = field(default=None, compare=False, repr=False)
    result: ActionResult | None = field(default=None, compare=False, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("done"), data.pop("result")
        return data


class LateApplier:
    """The calls received and not yet applied, and the loop that applies them when due."""

    def __init__(
        self,
        state: VendorState,
        keys: KeyStore,
        store: SqliteStore | None,
        settings: LateSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state, self.keys, self.store, self.clock = state, keys, store, clock
        self.settings = settings or LateSettings()
        self.settings.validate()
        self.applied = 0
        self._random = random.Random()
        self._pending: dict[int, Pending] = {}
        self._seq = 0
        if store is not None:
            for data in store.load_late():
                pending = Pending(**data)
                self._pending[pending.seq] = pending
                self._seq = max(self._seq, pending.seq)
                if pending.key is not None and pending.fingerprint is not None:
                    keys.begin(pending.key, pending.fingerprint)  # a retry meets "in use"

    @property
    def waiting(self) -> bool:
        """Whether any received call is not applied yet."""
        return bool(self._pending)

    @property
    def on(self) -> bool:
        return self.settings.on

    def receive(
        self,
        action: str,
        sid: str,
        mode: Mode,
        key: str | None,
        fingerprint: str | None,
        request_id: str | None,
    ) -> Pending:
        """Record a call to apply later (durably, with a state file)."""
        self._seq += 1
        wait = self.settings.delay + self._random.uniform(0.0, self.settings.jitter)
        pending = Pending(
            self._seq,
            self.clock() + wait,
            action,
            sid,
            mode.value,
            key,
            fingerprint,
            request_id,
            done=asyncio.Event(),
        )
        self._pending[pending.seq] = pending
        if self.store is not None:
            self.store.add_late(pending.seq, pending.public())
        return pending

    def pending(self) -> list[dict[str, Any]]:
        return [p.public() for p in sorted(self._pending.values(), key=lambda p: p.due)]

    def apply_due(self, now: float | None = None) -> int:
        """Apply every pending call due by ``now`` (all of them when ``now`` is infinite)."""
        moment = self.clock() if now is None else now
        due = sorted((p for p in self._pending.values() if p.due <= moment), key=lambda p: p.due)
        for pending in due:
            self._apply(pending)
        return len(due)

    def _apply(self, pending: Pending) -> None:
        del self._pending[pending.seq]
        mode = Mode(pending.mode)
        if pending.key is not None and mode is Mode.KEY and self.keys.completed(pending.key):
            result = None  # a retry with this key ran after a restart forgot the reservation
        else:
            result = self.state.act(
                pending.action, pending.sid, mode, pending.key, pending.request_id
            )
            if pending.key is not None and mode is Mode.KEY:
                self.keys.complete(pending.key, result.status_code, result.body)
        self.applied += 1
        if self.store is not None:
            self.store.remove_late(pending.seq)
        pending.result = result
        if pending.done is not None:
            pending.done.set()

    def clear(self) -> None:
        self._pending.clear()
        if self.store is not None:
            self.store.clear_late()

    async def run(self) -> None:
        """Apply due calls until cancelled (the app's lifespan runs it)."""
        while True:
            if self._pending:
                self.apply_due()
            await asyncio.sleep(_TICK)
