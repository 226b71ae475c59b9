"""The journal's rules, written once over a store's connector (:mod:`processor.journal.connector`).

What is decided here holds for every store: a request is ensured by reading first and inserting
only what is new (every poll pass ensures every pending request); a claim and a lease renewal are
single statements; a transition reads the claimed row under its fence, merges the fields, writes
it back naming the fence again and appends the transitions row, all in one transaction, so a
fence that moved on means :class:`LeaseLost` and nothing written; an operator's ``force`` bumps
the fence so that every outstanding claim is void; releasing a claim gives its send right up
whatever happens to the write. Arguments are checked (:mod:`processor.journal.rows`) before any
transaction opens.

How each of these is made atomic against other threads, processes and replicas (``BEGIN
IMMEDIATE``, row locks, ``SKIP LOCKED``) is the connector's, and its SQL's, business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from processor.journal.base import (
    FINAL_STATES,
    Claim,
    LeaseLost,
    RequestRecord,
    State,
    Transition,
)
from processor.journal.connector import Connector, Params, Session
from processor.journal.holders import LocalSendRights
from processor.journal.rows import (
    MUTABLE_FIELDS,
    Clock,
    Row,
    aware_utc,
    check_fields,
    check_lease_seconds,
    check_limit,
    record_from_row,
    state_names,
    transition_from_row,
    utcnow,
)
from processor.journal.schema import check_schema, migrate

__all__ = ["StoreJournal"]


# The exported fields a restore writes as they are (the others are encoded or set by it).
_RESTORED = (
    "request_id",
    "idempotency_key",
    "subscription_id",
    "asset_id",
    "product_id",
    "marketplace_id",
    "environment",
    "customer_id",
    "attempts",
    "outcome",
    "reason",
    "last_error",
    "noted",
)


def _required(row: Row | None) -> Row:
    assert row is not None  # aggregates, EXISTS and a row just written always return one
    return row


class StoreJournal:
    """The :class:`~processor.journal.base.Journal` on any store, through its connector."""

    def __init__(self, connector: Connector, *, clock: Clock = utcnow) -> None:
        self._c = connector
        self.connector = connector  # public for tests that hold a transaction open midway
        self._q = connector.queries
        self._clock = clock
        self.url = connector.url
        self._final = connector.names(sorted(s.value for s in FINAL_STATES))
        self._senders: LocalSendRights | None = None

    @property
    def senders(self) -> LocalSendRights:
        """Send rights (:mod:`processor.journal.holders`), opened on first use."""
        if self._senders is None:
            self._senders = self._c.send_rights()
        return self._senders

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "clock()")

    def _record(self, row: Row) -> RequestRecord:
        return record_from_row(row, time=self._c.decode_time, data=self._c.decode_data)

    def _lease(self, now: datetime, lease_seconds: float) -> dict[str, Any]:
        """Both ways of timing a lease; the dialect's SQL uses the one it trusts."""
        seconds = check_lease_seconds(lease_seconds)
        return {
            "lease_seconds": seconds,
            "lease_expires_at": self._c.time(now + timedelta(seconds=seconds)),
            "now": self._c.time(now),
        }

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> None:
        migrate(self._c, self._now())

    def check_schema(self) -> None:
        check_schema(self._c)

    # -- requests ---------------------------------------------------------------------------------

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
        ids = {"subscription_id": subscription_id, "asset_id": asset_id, "product_id": product_id}
        ids |= {"marketplace_id": marketplace_id, "environment": environment}
        return self._ensure(request_id, idempotency_key, ids | {"customer_id": customer_id})[0]

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
        ids = {"subscription_id": subscription_id, "asset_id": asset_id, "product_id": product_id}
        ids |= {"marketplace_id": marketplace_id, "environment": environment}
        ids |= {"customer_id": customer_id}
        return self._ensure(request_id, idempotency_key, ids, (owner, lease_seconds))

    def _ensure(
        self,
        request_id: str,
        idempotency_key: str,
        ids: dict[str, str | None],
        claimant: tuple[str, float] | None = None,
    ) -> tuple[RequestRecord, Claim | None]:
        # Every poll pass ensures every pending request: read first, write only what is new.
        existing = self.get(request_id)
        if existing is not None:
            return existing, None
        now = self._now()
        key = {"request_id": request_id}
        values = {**key, "state": State.NEW.value, "idempotency_key": idempotency_key, **ids}
        lease = None if claimant is None else self._lease(now, claimant[1])
        with self._c.transaction() as tx:
            inserted = tx.one(self._q["insert"], values | {"now": self._c.time(now)})
            # A row this call inserted is claimed in the same transaction: nothing can happen
            # between the two that could not happen before the insert (a crash leaves no row).
            if inserted is not None and claimant is not None and lease is not None:
                params = {**key, "owner": claimant[0], "final_states": self._final, **lease}
                row = tx.one(self._q["claim"], params)
                if row is not None:
                    record = self._record(row)
                    return record, Claim(claimant[0], record.fence, record)
            row = _required(tx.one(self._q["get"], key))
        return self._record(row), None

    def get(self, request_id: str) -> RequestRecord | None:
        with self._c.read() as tx:
            row = tx.one(self._q["get"], {"request_id": request_id})
        return None if row is None else self._record(row)

    def claim(self, request_id: str, owner: str, lease_seconds: float) -> Claim | None:
        params = {
            "request_id": request_id,
            "owner": owner,
            "final_states": self._final,
            **self._lease(self._now(), lease_seconds),
        }
        with self._c.atomic() as tx:
            row = tx.one(self._q["claim"], params)
        return None if row is None else Claim(owner, row["fence"], self._record(row))

    def claim_due(
        self, owner: str, lease_seconds: float, limit: int, states: Sequence[State] | None = None
    ) -> list[Claim]:
        params = {
            "owner": owner,
            "states": self._c.names(state_names(states)),
            "limit": check_limit(limit),
            **self._lease(self._now(), lease_seconds),
        }
        with self._c.atomic() as tx:
            rows = tx.all(self._q["claim_due"], params)
        # RETURNING has no order of its own.
        records = sorted(
            (self._record(r) for r in rows), key=lambda r: (r.next_attempt_at, r.request_id)
        )
        return [Claim(owner, r.fence, r) for r in records]

    def transition(
        self, claim: Claim, to_state: State, *, detail: str | None = None, **fields: Any
    ) -> Claim:
        return self._change(
            claim, State(to_state), check_fields(fields), detail=detail, journaled=True
        )

    def update(self, claim: Claim, **fields: Any) -> Claim:
        return self._change(claim, None, check_fields(fields), detail=None, journaled=False)

    def _change(
        self,
        claim: Claim,
        to_state: State | None,
        fields: dict[str, Any],
        *,
        detail: str | None,
        journaled: bool,
    ) -> Claim:
        """Read the claimed row, merge ``fields``, write it back under the fence: one
        transaction."""
        with self._c.transaction() as tx:
            saved = self._save(tx, claim, to_state, fields, detail=detail, journaled=journaled)
        return Claim(claim.owner, claim.fence, saved)

    def _save(
        self,
        tx: Session,
        claim: Claim,
        to_state: State | None,
        fields: dict[str, Any],
        *,
        detail: str | None,
        journaled: bool,
    ) -> RequestRecord:
        """The write of :meth:`_change`, in the caller's transaction; the record as saved, built
        from the row read and the fields written (what a read would return: ``fields`` are
        checked and normalised, the time is the store's) rather than decoded once more."""
        now = self._now()
        at = self._c.time(now)
        key = {"request_id": claim.request_id, "fence": claim.fence, "owner": claim.owner}
        row = tx.one(self._q["claimed"], key)
        if row is None:
            raise LeaseLost(claim.request_id, claim.fence)
        current = self._record(row)
        state = current.state if to_state is None else to_state
        values = {name: getattr(current, name) for name in MUTABLE_FIELDS} | fields
        params = {**key, **values, "state": state.value, "updated_at": at}
        params["next_attempt_at"] = self._c.time(values["next_attempt_at"])
        params["data"] = self._c.data(fields["data"]) if "data" in fields else None
        if tx.one(self._q["save"], params) is None:  # the row is held: the fence in WHERE decides
            raise LeaseLost(claim.request_id, claim.fence)
        if journaled:
            tx.run(
                self._q["log_transition"],
                {
                    **key,
                    "from_state": current.state.value,
                    "to_state": state.value,
                    "at": at,
                    "detail": detail,
                },
            )
        return replace(current, **fields, state=state, updated_at=self._c.decode_time(at))

    def renew(self, claim: Claim, lease_seconds: float) -> Claim:
        params = {
            "request_id": claim.request_id,
            "fence": claim.fence,
            "owner": claim.owner,
            **self._lease(self._now(), lease_seconds),
        }
        with self._c.atomic() as tx:
            row = tx.one(self._q["renew"], params)
        if row is None:
            raise LeaseLost(claim.request_id, claim.fence)
        return Claim(claim.owner, claim.fence, self._record(row))

    def release(self, claim: Claim, **fields: Any) -> None:
        key = {"request_id": claim.request_id, "fence": claim.fence, "owner": claim.owner}
        try:
            checked = check_fields(fields)  # before any transaction opens
            if not checked:
                with self._c.atomic() as tx:
                    tx.run(self._q["release"], key)
                return
            # The claim's last update and its release, committed together (a moved fence writes
            # neither: LeaseLost, and the lease is someone else's anyway).
            with self._c.transaction() as tx:
                self._save(tx, claim, None, checked, detail=None, journaled=False)
                tx.run(self._q["release"], key)
        finally:  # the claim's work is over: it sends nothing more, whatever the lease says
            if self._senders is not None:
                self._senders.release(claim.request_id, claim.fence)

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
        state = State(to_state)
        at = self._c.time(self._now())
        with self._c.transaction() as tx:
            before = tx.one(self._q["get_for_update"], {"request_id": request_id})
            if before is None:
                raise KeyError(f"no journal record for {request_id}")
            if expect is not None and before["state"] != expect.value:
                return self._record(before)  # moved on meanwhile: nothing written
            after = _required(
                tx.one(
                    self._q["force"],
                    {
                        "request_id": request_id,
                        "state": state.value,
                        "updated_at": at,
                        "data": None if data is None else self._c.data(data),
                        "next_attempt_at": None if due is None else self._c.time(due),
                    },
                )
            )
            tx.run(
                self._q["log_transition"],
                {
                    "request_id": request_id,
                    "from_state": before["state"],
                    "to_state": state.value,
                    "fence": after["fence"],
                    "owner": actor,
                    "at": at,
                    "detail": detail,
                },
            )
        return self._record(after)

    def park_unseen(
        self, request_id: str, *, idempotency_key: str, detail: str, actor: str
    ) -> RequestRecord | None:
        """An operator's ``park`` of a request this journal has never seen: its row inserted in
        ``parked`` (with the transition that says who and why) in one transaction, so the daemon
        finds it parked when it lists it and never claims it. None when a row exists already
        (the daemon saw it first): the caller parks that row with :meth:`force` instead."""
        at = self._now()
        ids = ("subscription_id", "asset_id", "product_id", "marketplace_id", "environment")
        values: dict[str, Any] = dict.fromkeys((*ids, "customer_id"))  # unknown until listed
        values |= {"request_id": request_id, "state": State.PARKED.value}
        values |= {"idempotency_key": idempotency_key, "now": self._c.time(at)}
        with self._c.transaction() as tx:
            if tx.one(self._q["insert"], values) is None:
                return None  # the insert's ON CONFLICT: someone else's row, left as it is
            after = _required(tx.one(self._q["get"], {"request_id": request_id}))
            tx.run(
                self._q["log_transition"],
                {
                    "request_id": request_id,
                    "from_state": None,
                    "to_state": State.PARKED.value,
                    "fence": after["fence"],
                    "owner": actor,
                    "at": self._c.time(at),
                    "detail": detail,
                },
            )
        return self._record(after)

    def restore(self, record: RequestRecord, transitions: Sequence[Transition]) -> str:
        """``journal import``: write an exported row, in one transaction. ``inserted``: the
        journal did not hold it; ``replaced``: it held an older version (by ``updated_at``),
        not leased now; ``unchanged``: the same version; ``kept``: a newer one, never overwritten;
        ``busy``: a process holds its lease now. The imported row carries no lease, and its
        fence moves past both versions', so no claim made on either can write it again. The
        transitions newer than the row replaced are appended."""
        now = self._now()
        with self._c.transaction() as tx:
            row = tx.one(self._q["get_for_update"], {"request_id": record.request_id})
            current = None if row is None else self._record(row)
            if current is not None:
                if current.updated_at is not None and current.updated_at == record.updated_at:
                    return "unchanged"
                newer = current.updated_at is not None and (
                    record.updated_at is None or current.updated_at > record.updated_at
                )
                if newer:
                    return "kept"
            fence = record.fence if current is None else max(record.fence, current.fence) + 1
            values = {name: getattr(record, name) for name in _RESTORED}
            values |= {
                "state": record.state.value,
                "fence": fence,
                "data": self._c.data(record.data),
                "next_attempt_at": self._c.time(record.next_attempt_at),
                "created_at": self._c.time(record.created_at or now),
                "updated_at": self._c.time(record.updated_at or now),
            }
            if current is None:
                tx.run(self._q["restore_insert"], values)
            elif tx.one(self._q["restore_replace"], values | {"now": self._c.time(now)}) is None:
                return "busy"  # a live lease (the SQL times it as claims do)
            since = None if current is None else current.updated_at
            for t in transitions:
                if since is not None and t.at <= since:
                    continue
                tx.run(
                    self._q["log_transition"],
                    {
                        "request_id": record.request_id,
                        "from_state": None if t.from_state is None else t.from_state.value,
                        "to_state": t.to_state.value,
                        "fence": t.fence,
                        "owner": t.owner,
                        "at": self._c.time(t.at),
                        "detail": t.detail,
                    },
                )
        return "inserted" if current is None else "replaced"

    # -- reading ----------------------------------------------------------------------------------

    def transitions(self, request_id: str) -> list[Transition]:
        with self._c.read() as tx:
            rows = tx.all(self._q["transitions"], {"request_id": request_id})
        return [transition_from_row(r, time=self._c.decode_time) for r in rows]

    def counts(self) -> dict[State, int]:
        with self._c.read() as tx:
            rows = tx.all(self._q["counts"])
        return {state: 0 for state in State} | {State(r["state"]): r["n"] for r in rows}

    def _since_until(self, since: datetime | None, until: datetime | None) -> Params:
        return {
            "updated_since": None
            if since is None
            else self._c.time(aware_utc(since, "updated_since")),
            "updated_until": None
            if until is None
            else self._c.time(aware_utc(until, "updated_until")),
        }

    def records(
        self,
        *,
        states: Sequence[State] | None = None,
        updated_since: datetime | None = None,
        updated_until: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[RequestRecord]:
        """Records ordered by request id, read in batches (``updated_since`` inclusive,
        ``updated_until`` exclusive). Arguments are checked now; reading starts at the first row."""
        params = {
            "states": self._c.names(state_names(states)),
            **self._since_until(updated_since, updated_until),
        }
        return (self._record(row) for row in self._c.stream(params, check_limit(limit)))

    def unnoted(
        self, *, updated_until: datetime, limit: int, updated_since: datetime | None = None
    ) -> list[RequestRecord]:
        params = {
            **self._since_until(updated_since, updated_until),
            "now": self._c.time(self._now()),
            "limit": check_limit(limit),
        }
        with self._c.read() as tx:
            rows = tx.all(self._q["unnoted"], params)
        return [self._record(r) for r in rows]

    def stranded(self, *, states: Sequence[State], limit: int) -> list[RequestRecord]:
        params = {
            "states": self._c.names(state_names(states)),
            "now": self._c.time(self._now()),
            "limit": check_limit(limit),
        }
        with self._c.read() as tx:
            rows = tx.all(self._q["stranded"], params)
        return [self._record(r) for r in rows]

    def mark_noted(self, request_id: str, state: State) -> bool:
        params = {
            "request_id": request_id,
            "state": State(state).value,
            "updated_at": self._c.time(self._now()),
        }
        with self._c.atomic() as tx:
            return tx.one(self._q["mark_noted"], params) is not None

    def close(self) -> None:
        if self._senders is not None:
            self._senders.close()
            self._senders = None
        self._c.close()
