"""The PostgreSQL journal: several replicas on one database.

Concurrency: claims are single ``UPDATE`` statements (row locks make concurrent claimers of one
request queue, and exactly one wins); :meth:`PostgresJournal.claim_due` picks rows with
``FOR UPDATE SKIP LOCKED``, so two replicas polling at once get disjoint sets without waiting on each
other. Every transition locks the row under its fence (``SELECT ... FOR UPDATE``) and writes it back
with the fence in the ``UPDATE``'s ``WHERE`` clause; a fence that moved on means :class:`LeaseLost`.
Transactions hold a few statements and never a remote call.

Time: leases are timed by the *database* clock (``now()``): replicas whose clocks disagree still
agree on who holds a lease, and ``lease_expires_at`` is the server's time. The injected ``clock``
decides due-ness (``next_attempt_at``) and the recorded times (created, updated, transitions), so
tests and policy timers can move it by hand.

Connections: a :class:`psycopg_pool.ConnectionPool` (``pool_size`` at most, ``min_size`` kept
open), each connection checked before use, in autocommit with explicit transactions, session time
zone UTC, and ``search_path`` set to ``schema`` when given (tests use a fresh schema per run).

Stalls: a process frozen (SIGSTOP, a VM paused, swapping) between two statements of a transaction
keeps its row locks, and every other replica's claim of those rows waits on them: its lease runs
out, but nobody can take the work over. Each session therefore sets
``idle_in_transaction_session_timeout`` (``stall_timeout``): the server ends a transaction left idle
that long, releasing its locks. Journal transactions send their statements back to back, so only a
stalled process meets it; when it wakes, its write fails (:class:`JournalError`) and the claim is
someone else's to take.

Schema: only :meth:`migrate` changes it (``cancel-processor journal migrate``); the daemon calls
:meth:`check_schema` at start. Migrations take an advisory lock, so replicas may all run them.

Failure modes: an unreachable server raises :class:`JournalError` after ``connect_timeout``
seconds; a missing or old schema :class:`SchemaError`. Messages show the URL without its password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from processor.journal import redact_url
from processor.journal.base import (
    FINAL_STATES,
    Claim,
    JournalError,
    LeaseLost,
    RequestRecord,
    SchemaError,
    State,
    Transition,
)
from processor.journal.holders import PostgresSendRights
from processor.journal.queries import load_migrations, load_queries
from processor.journal.rows import (
    MUTABLE_FIELDS,
    Clock,
    aware_utc,
    check_fields,
    check_lease_seconds,
    check_limit,
    record_from_row,
    state_names,
    transition_from_row,
    utcnow,
)

__all__ = ["PostgresJournal"]

_ITERSIZE = 500  # rows per fetch of the server-side cursor in records()
_MIGRATE_HINT = "run `cancel-processor journal migrate`"
_FINAL = sorted(s.value for s in FINAL_STATES)

Cursor = psycopg.Cursor[DictRow]


def _time(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _data(value: Any) -> dict[str, Any]:
    return dict(value)


def _record(row: DictRow) -> RequestRecord:
    return record_from_row(row, time=_time, data=_data)


class PostgresJournal:
    """The :class:`~processor.journal.base.Journal` on PostgreSQL (psycopg 3 and its pool)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = utcnow,
        pool_size: int = 8,
        min_size: int = 1,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        stall_timeout: float = 5.0,
    ) -> None:
        self.url = redact_url(url)
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be positive, got {stall_timeout!r}")
        if not 1 <= min_size <= pool_size:
            raise ValueError(f"need 1 <= min_size <= pool_size, got {min_size=}, {pool_size=}")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ValueError(f"malformed PostgreSQL journal URL {self.url!r}") from None
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "application_name" not in params:
            kwargs["application_name"] = "cancel-processor"
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._clock = clock
        self._schema = schema
        self._dsn = url  # with its password, if any: for the send-rights session, never shown
        self._connect_timeout = connect_timeout
        self._senders: PostgresSendRights | None = None
        self._stall_ms = max(1, round(stall_timeout * 1000))
        self._q = load_queries("postgres")
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=pool_size,
            kwargs=kwargs,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            name="journal",
            open=True,
        )

    @property
    def senders(self) -> PostgresSendRights:
        """Send rights (:mod:`processor.journal.holders`): advisory locks of one session."""
        if self._senders is None:
            self._senders = PostgresSendRights(
                self._dsn, connect_timeout=self._connect_timeout, schema=self._schema
            )
        return self._senders

    # -- plumbing ---------------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(
            sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
                sql.Literal(self._stall_ms)
            )
        )
        if self._schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's errors as the journal's: the caller learns *what* failed, not which driver."""
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaError(
                f"the journal schema is missing in {self.url}: {_MIGRATE_HINT}"
            ) from exc
        except psycopg.errors.IdleInTransactionSessionTimeout as exc:  # see "Stalls" above
            raise JournalError(
                f"PostgreSQL journal {self.url}: this process stalled for over "
                f"{self._stall_ms} ms in a transaction, and the server ended it"
            ) from exc
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        ) as exc:  # unreachable, pool timeout, ...
            raise JournalError(f"PostgreSQL journal {self.url}: {exc}") from exc

    @contextlib.contextmanager
    def _autocommit(self) -> Iterator[Cursor]:
        """A cursor outside any explicit transaction: each statement commits on its own."""
        with self._errors(), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextlib.contextmanager
    def _write(self) -> Iterator[Cursor]:
        """One transaction: committed on success, rolled back on any exception (LeaseLost included)."""
        with (
            self._errors(),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield cur

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "clock()")

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> None:
        with self._write() as cur:
            cur.execute(
                self._q["migration_lock"],
                {"lock": f"cancel-processor journal {self._schema or ''}"},
            )
            if self._schema is not None:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema))
                )
            cur.execute(self._q["create_schema_version"])
            cur.execute(self._q["schema_version"])
            current = self._one(cur)["version"] or 0
            for migration in load_migrations("postgres"):
                if migration.version <= current:
                    continue
                cur.execute(migration.sql)
                cur.execute(
                    self._q["record_schema_version"],
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "applied_at": self._now(),
                    },
                )

    def check_schema(self) -> None:
        latest = load_migrations("postgres")[-1].version
        with self._autocommit() as cur:
            cur.execute(self._q["schema_version_exists"])
            if not self._one(cur)["present"]:
                raise SchemaError(f"the journal schema is missing in {self.url}: {_MIGRATE_HINT}")
            cur.execute(self._q["schema_version"])
            current = self._one(cur)["version"] or 0
        if current < latest:
            raise SchemaError(
                f"the journal schema in {self.url} is at version {current}, this code needs "
                f"{latest}: {_MIGRATE_HINT}"
            )
        if current > latest:
            raise SchemaError(
                f"the journal schema in {self.url} is at version {current}, newer than this "
                f"code knows ({latest}): upgrade cancel-processor"
            )

    @staticmethod
    def _one(cur: Cursor) -> DictRow:
        row = cur.fetchone()
        assert row is not None  # aggregates and to_regclass always return a row
        return row

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
        # Every poll pass ensures every pending request: read first, write only what is new.
        existing = self.get(request_id)
        if existing is not None:
            return existing
        with self._write() as cur:
            cur.execute(
                self._q["insert"],
                {
                    "request_id": request_id,
                    "state": State.NEW.value,
                    "idempotency_key": idempotency_key,
                    "subscription_id": subscription_id,
                    "asset_id": asset_id,
                    "product_id": product_id,
                    "marketplace_id": marketplace_id,
                    "environment": environment,
                    "customer_id": customer_id,
                    "now": self._now(),
                },
            )
            cur.execute(self._q["get"], {"request_id": request_id})
            return _record(self._one(cur))

    def get(self, request_id: str) -> RequestRecord | None:
        with self._autocommit() as cur:
            cur.execute(self._q["get"], {"request_id": request_id})
            row = cur.fetchone()
        return None if row is None else _record(row)

    def claim(self, request_id: str, owner: str, lease_seconds: float) -> Claim | None:
        params = {
            "request_id": request_id,
            "owner": owner,
            "lease_seconds": check_lease_seconds(lease_seconds),
            "now": self._now(),
            "final_states": _FINAL,
        }
        with self._autocommit() as cur:  # one statement: atomic on its own
            cur.execute(self._q["claim"], params)
            row = cur.fetchone()
        return None if row is None else Claim(owner, row["fence"], _record(row))

    def claim_due(
        self, owner: str, lease_seconds: float, limit: int, states: Sequence[State] | None = None
    ) -> list[Claim]:
        params = {
            "owner": owner,
            "lease_seconds": check_lease_seconds(lease_seconds),
            "now": self._now(),
            "states": state_names(states),
            "limit": check_limit(limit),
        }
        with self._autocommit() as cur:
            cur.execute(self._q["claim_due"], params)
            rows = cur.fetchall()
        # RETURNING has no order of its own.
        records = sorted(
            (_record(r) for r in rows), key=lambda r: (r.next_attempt_at, r.request_id)
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
        """Lock the claimed row, merge ``fields``, write it back under the fence, in one transaction."""
        at = self._now()
        key = {"request_id": claim.request_id, "fence": claim.fence, "owner": claim.owner}
        with self._write() as cur:
            cur.execute(self._q["claimed"], key)
            row = cur.fetchone()
            if row is None:
                raise LeaseLost(claim.request_id, claim.fence)
            current = _record(row)
            state = current.state if to_state is None else to_state
            values = {name: getattr(current, name) for name in MUTABLE_FIELDS} | fields
            cur.execute(
                self._q["save"],
                {
                    **key,
                    **values,
                    "state": state.value,
                    "data": Jsonb(values["data"]),
                    "updated_at": at,
                },
            )
            saved = cur.fetchone()
            if (
                saved is None
            ):  # cannot happen under the row lock; the fence in WHERE is the last word
                raise LeaseLost(claim.request_id, claim.fence)
            if journaled:
                cur.execute(
                    self._q["log_transition"],
                    {
                        **key,
                        "from_state": current.state.value,
                        "to_state": state.value,
                        "at": at,
                        "detail": detail,
                    },
                )
        return Claim(claim.owner, claim.fence, _record(saved))

    def renew(self, claim: Claim, lease_seconds: float) -> Claim:
        with self._autocommit() as cur:
            cur.execute(
                self._q["renew"],
                {
                    "request_id": claim.request_id,
                    "fence": claim.fence,
                    "owner": claim.owner,
                    "lease_seconds": check_lease_seconds(lease_seconds),
                },
            )
            row = cur.fetchone()
        if row is None:
            raise LeaseLost(claim.request_id, claim.fence)
        return Claim(claim.owner, claim.fence, _record(row))

    def release(self, claim: Claim) -> None:
        try:
            with self._autocommit() as cur:
                cur.execute(
                    self._q["release"],
                    {
                        "request_id": claim.request_id,
                        "fence": claim.fence,
                        "owner": claim.owner,
                    },
                )
        finally:  # the claim's work is over: it sends nothing more, whatever the lease says
            if self._senders is not None:
                self._senders.release(claim.request_id, claim.fence)

    def force(self, request_id: str, to_state: State, *, detail: str, actor: str) -> RequestRecord:
        state = State(to_state)
        at = self._now()
        with self._write() as cur:
            cur.execute(self._q["get_for_update"], {"request_id": request_id})
            before = cur.fetchone()
            if before is None:
                raise KeyError(f"no journal record for {request_id}")
            cur.execute(
                self._q["force"], {"request_id": request_id, "state": state.value, "updated_at": at}
            )
            after = self._one(cur)
            cur.execute(
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
        return _record(after)

    # -- reading ----------------------------------------------------------------------------------

    def transitions(self, request_id: str) -> list[Transition]:
        with self._autocommit() as cur:
            cur.execute(self._q["transitions"], {"request_id": request_id})
            rows = cur.fetchall()
        return [transition_from_row(r, time=_time) for r in rows]

    def counts(self) -> dict[State, int]:
        with self._autocommit() as cur:
            cur.execute(self._q["counts"])
            rows = cur.fetchall()
        return {state: 0 for state in State} | {State(r["state"]): r["n"] for r in rows}

    def records(
        self,
        *,
        states: Sequence[State] | None = None,
        updated_since: datetime | None = None,
        updated_until: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[RequestRecord]:
        """Records ordered by request id through a server-side cursor (``updated_since`` inclusive,
        ``updated_until`` exclusive). The iterator holds one pooled connection until exhausted or closed."""
        params = {
            "states": state_names(states),
            "updated_since": None
            if updated_since is None
            else aware_utc(updated_since, "updated_since"),
            "updated_until": None
            if updated_until is None
            else aware_utc(updated_until, "updated_until"),
            "limit": check_limit(limit),
        }
        return self._stream(params)

    def unnoted(
        self, *, updated_until: datetime, limit: int, updated_since: datetime | None = None
    ) -> list[RequestRecord]:
        params = {
            "updated_until": aware_utc(updated_until, "updated_until"),
            "updated_since": None
            if updated_since is None
            else aware_utc(updated_since, "updated_since"),
            "limit": check_limit(limit),
        }
        with self._autocommit() as cur:
            cur.execute(self._q["unnoted"], params)
            rows = cur.fetchall()
        return [_record(r) for r in rows]

    def stranded(self, *, states: Sequence[State], limit: int) -> list[RequestRecord]:
        params = {"states": state_names(states), "now": self._now(), "limit": check_limit(limit)}
        with self._autocommit() as cur:
            cur.execute(self._q["stranded"], params)
            rows = cur.fetchall()
        return [_record(r) for r in rows]

    def mark_noted(self, request_id: str, state: State) -> bool:
        with self._autocommit() as cur:  # one statement: atomic on its own
            cur.execute(
                self._q["mark_noted"],
                {
                    "request_id": request_id,
                    "state": State(state).value,
                    "updated_at": self._now(),
                },
            )
            return cur.fetchone() is not None

    def _stream(self, params: dict[str, Any]) -> Iterator[RequestRecord]:
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            with conn.cursor(name="journal_records") as cur:
                cur.itersize = _ITERSIZE
                cur.execute(self._q["records"], params)
                for row in cur:
                    yield _record(row)

    def close(self) -> None:
        if self._senders is not None:
            self._senders.close()
            self._senders = None
        self._pool.close()
