"""The journal: the durable record of every request's progress, and what makes a crash harmless.

One row per request holds its state, a lease (owner + expiry) and a fence. The fence is a counter
bumped on every claim; every transition names the fence it was claimed under and is refused with
:class:`LeaseLost` when the fence has moved on (another worker re-claimed the request after this
one's lease ran out). A worker that gets :class:`LeaseLost` stops and makes no further remote call
for that request. Every transition also appends a row to an append-only transitions table.

No method holds a database transaction open across a call to anything remote: the engine writes
the intent, commits, calls the vendor, then records the result in a new transaction.

States, and the sets of them every reader derives from one table: :mod:`processor.states`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from processor.states import FINAL_STATES, NOTED_STATES, State

__all__ = [
    "State",
    "FINAL_STATES",
    "NOTED_STATES",
    "RequestRecord",
    "Transition",
    "Claim",
    "Journal",
    "JournalError",
    "JournalFull",
    "LeaseLost",
    "SchemaError",
]


class JournalError(Exception):
    """The journal cannot be used (unreachable, corrupt)."""


class JournalFull(JournalError):
    """The journal's storage refuses writes for now: a full disk, a quota, a file size limit.
    Weather, not configuration: the caller waits and tries again, and nothing is lost (a write
    that failed changed nothing; the request is taken up again where its row is)."""


class SchemaError(JournalError):
    """The database schema is missing or older than this code: run ``cancel-processor journal
    migrate``."""


class LeaseLost(JournalError):
    """The claim's fence moved on: another worker owns the request now."""

    def __init__(self, request_id: str, fence: int) -> None:
        super().__init__(f"lease lost on {request_id} (fence {fence})")
        self.request_id = request_id
        self.fence = fence


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    state: State
    idempotency_key: str
    subscription_id: str | None = None
    asset_id: str | None = None
    product_id: str | None = None
    marketplace_id: str | None = None
    environment: str | None = None
    customer_id: str | None = None
    attempts: int = 0  # vendor attempts for the current step
    fence: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    next_attempt_at: datetime | None = None
    outcome: str | None = None  # last vendor outcome name (see adapters.base.outcome_name)
    reason: str | None = None  # customer-readable reason of a refusal / why parked
    last_error: str | None = None
    noted: str | None = None  # the state whose conversation note was posted (never post twice)
    data: Mapping[str, Any] = field(default_factory=dict)  # policy dates, batch ids, ...
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Transition:
    request_id: str
    from_state: State | None
    to_state: State
    fence: int
    at: datetime
    owner: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof that ``owner`` holds the lease on a request under ``fence``."""

    owner: str
    fence: int
    record: RequestRecord

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def state(self) -> State:
        return self.record.state


class Journal(Protocol):
    """A store. Implementation: :class:`~processor.journal.store.StoreJournal`, the rules written
    once over the connectors of :mod:`processor.journal.sqlite` and
    :mod:`processor.journal.postgres`.

    It also offers ``senders``, the per-request send rights of :mod:`processor.journal.holders`
    (given up by :meth:`release`); the engine falls back to a process-local table without them."""

    url: str

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless the schema is current."""

    def ensure(
        self,
        request_id: str,
        *,
        idempotency_key: str,
        subscription_id: str | None = None,
        asset_id: str | None = None,
        product_id: str | None = None,
        marketplace_id: str | None = None,
        environment: str | None = None,
        customer_id: str | None = None,
    ) -> RequestRecord:
        """Insert the request in state ``new`` if absent; return the current row either way."""

    def claim(self, request_id: str, owner: str, lease_seconds: float) -> Claim | None:
        """Take the lease if the row exists, is not final, has no live lease held by someone else,
        and its ``next_attempt_at`` is null or due. Bumps the fence. None otherwise."""

    def ensure_and_claim(
        self,
        request_id: str,
        owner: str,
        lease_seconds: float,
        *,
        idempotency_key: str,
        subscription_id: str | None = None,
        asset_id: str | None = None,
        product_id: str | None = None,
        marketplace_id: str | None = None,
        environment: str | None = None,
        customer_id: str | None = None,
    ) -> tuple[RequestRecord, Claim | None]:
        """:meth:`ensure`, and when this call inserts the row, :meth:`claim` it in the same
        transaction (one commit for a request seen the first time; a crash between the two would
        leave a ``new`` row that the next claim starts afresh anyway). A row that already existed
        is returned unclaimed: the caller decides whether to claim it. The record is the claim's
        when claimed."""

    def claim_due(
        self, owner: str, lease_seconds: float, limit: int, states: Sequence[State] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` rows whose ``next_attempt_at`` is due (timers, retries), including
        final rows that still carry a timer, oldest timer first; skipping rows with a live lease --
        the caller's own too, since re-claiming would void one of its own workers' claims -- and
        rows another replica is claiming at that moment (SKIP LOCKED)."""

    def transition(
        self,
        claim: Claim,
        to_state: State,
        *,
        detail: str | None = None,
        **fields: Any,
    ) -> Claim:
        """Move to ``to_state`` under the claim's fence, updating ``fields`` (any of the record's
        mutable columns: attempts, next_attempt_at, outcome, reason, last_error, noted, data,
        subscription_id), appending a transition row. Raises :class:`LeaseLost`. ``to_state`` may
        equal the current state (a field update that is still journaled). Only the fence and owner
        are checked, not the lease's expiry: every re-claim bumps the fence, so an unchanged fence
        means nobody else has acted. Unknown fields, naive datetimes and data that JSON cannot hold
        raise :class:`ValueError` before anything is written."""

    def update(self, claim: Claim, **fields: Any) -> Claim:
        """Update fields without a state change and without a transitions row (e.g. ``noted``)."""

    def renew(self, claim: Claim, lease_seconds: float) -> Claim:
        """Heartbeat: extend the lease. Raises :class:`LeaseLost`."""

    def release(self, claim: Claim, **fields: Any) -> None:
        """Give the lease up (no-op if already lost). With ``fields``, first update them as
        :meth:`update` does, in the same transaction: the claim's last write and its release in
        one commit. A moved fence then raises :class:`LeaseLost` with nothing written. The claim's
        send right is given up whatever happens."""

    def force(
        self,
        request_id: str,
        to_state: State,
        *,
        detail: str,
        actor: str,
        data: Mapping[str, Any] | None = None,
        expect: State | None = None,
        due: datetime | None = None,
    ) -> RequestRecord:
        """An operator's hand (``retry``/``park``/``resume`` commands): set the state regardless
        of leases, bumping the fence so that any worker still holding a claim loses it. The step
        starts afresh: the lease and ``attempts`` are cleared, ``next_attempt_at`` becomes ``due``
        (None: no timer). ``data``, when given, replaces the row's data (the operator's choice for
        a held answer); with ``expect``, a row no longer in that state is left as it is (and
        returned as it is).
        :class:`KeyError` if unknown."""

    def park_unseen(
        self, request_id: str, *, idempotency_key: str, detail: str, actor: str
    ) -> RequestRecord | None:
        """``park`` of a request with no row yet: insert it ``parked`` (``detail`` is why, in its
        first transition), so no worker ever claims it; None if a row exists already."""

    def restore(self, record: RequestRecord, transitions: Sequence[Transition]) -> str:
        """``journal import``: write an exported row unless the journal holds the same or a newer
        one (``inserted``, ``replaced``, ``unchanged``, ``kept``, ``busy``)."""

    def get(self, request_id: str) -> RequestRecord | None: ...

    def transitions(self, request_id: str) -> list[Transition]: ...

    def counts(self) -> dict[State, int]:
        """Rows per state, every state present (zero included)."""

    def records(
        self,
        *,
        states: Sequence[State] | None = None,
        updated_since: datetime | None = None,
        updated_until: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[RequestRecord]:
        """Stream records ordered by request id; ``updated_since`` inclusive, ``updated_until``
        exclusive. ``updated_at`` moves on transition/update/force, not on claim/renew/release."""

    def unnoted(
        self, *, updated_until: datetime, limit: int, updated_since: datetime | None = None
    ) -> list[RequestRecord]:
        """Rows whose note is owed: in one of :data:`NOTED_STATES`, ``noted`` not that state, last
        changed before ``updated_until`` (exclusive; and at or after ``updated_since`` when given),
        without a live lease; oldest change first, at most ``limit``. Served by a partial index
        that holds only such rows, so the cost follows the owed notes, not the journal's size."""

    def stranded(self, *, states: Sequence[State], limit: int) -> list[RequestRecord]:
        """Rows in one of ``states`` whose lease ran out without a release: the process holding
        them died or froze mid-step, and not waiting for a retry (``next_attempt_at`` due or
        unset), so a claim would take them now. Oldest expiry first, at most ``limit``. Reading
        them takes nothing: a caller claims each as usual (an expired lease does not block it)."""

    def mark_noted(self, request_id: str, state: State) -> bool:
        """Record that the note of ``state`` was posted, if the row is still in ``state``; True
        when it is (noted now), False when the row moved on or is unknown. Needs no claim: the
        update names the state it was posted for, and a claim holder's own writes merge columns
        into the row as it is when they commit, so they do not undo it."""

    def close(self) -> None: ...
