"""The extension as deployed: installation keys, an installation not set up yet, the journal it
refuses, its logs in the runner's logger, and the schedulable that runs what no task triggers.

Connect is the live mock marketplace and the vendor the live mock vendor (cancel_sandbox.local); the
application is built as connect-extension-runner builds it for each task.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from connect.client import ConnectClient
from connect.eaas.core.enums import ResultType

from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, VENDOR_TOKEN_ENV, Sandbox
from processor.eaas.app import NOT_CONFIGURED_RETRY, RUNTIMES, CancelEventsApplication
from processor.eaas.variables import CONFIG_YAML, DECLARED, JOURNAL_URL, SQLITE_PERSISTENT
from processor.journal import open_journal
from processor.journal.base import State
from processor.model import parse_request

RUNNER_LOGGER = "eaas.eventsapp"  # connect-extension-runner's extension logger


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.delenv(VENDOR_TOKEN_ENV, raising=False)  # the secret comes from a variable
    with Sandbox(generate=12, seed=23) as box:
        yield box
    RUNTIMES.close()


@pytest.fixture
def runner_logger() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """The runner's extension logger with a handler of the test's (the runner adds its console
    and log-shipping handlers there, never on the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(RUNNER_LOGGER)
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, records
    logger.removeHandler(handler)
    logger.setLevel(level)


def variables(
    box: Sandbox, journal: Path, *, persistent: bool = True, **sections: Any
) -> dict[str, str]:
    values = {
        CONFIG_YAML: yaml.safe_dump(box.config_data(f"sqlite:///{journal}", **sections)),
        VENDOR_TOKEN_ENV: SANDBOX_VENDOR_TOKEN,
    }
    return {**values, SQLITE_PERSISTENT: "yes"} if persistent else values


def app(
    box: Sandbox,
    config: dict[str, str],
    *,
    key: str | None = None,
    installation_key: str | None = None,
    logger: logging.Logger | None = None,
) -> CancelEventsApplication:
    def client(api_key: str) -> ConnectClient:
        return ConnectClient(
            api_key, endpoint=box.endpoint, max_retries=3, default_headers={"EAAS_TASK_ID": "TQ-1"}
        )

    adapter = logging.LoggerAdapter(
        logger or logging.getLogger(RUNNER_LOGGER), extra={"task_id": "TQ-1"}
    )
    return CancelEventsApplication(
        client(key or box.api_key),
        adapter,
        config,
        installation_client=client(installation_key) if installation_key else None,
    )


def accepted_requests(box: Sandbox) -> list[str]:
    """Pending cancels whose subscription the vendor terminates (it refuses ids ending in 7)."""
    chosen = []
    for request_id, payload in sorted(box.cancel_requests().items()):
        params = payload["asset"].get("params") or []
        sub = next((p.get("value") for p in params if p.get("id") == "subscription_id"), "")
        if payload["status"] == "pending" and sub and not str(sub).endswith("7"):
            chosen.append(request_id)
    return chosen


def test_an_installation_nobody_configured_yet_reschedules_for_an_hour(sandbox: Sandbox) -> None:
    declared = {v["name"]: v["initial_value"] for v in DECLARED}  # as the runner creates them
    request_id = accepted_requests(sandbox)[0]
    response = app(sandbox, declared).handle_cancel_request(sandbox.request(request_id))
    assert response.status == ResultType.RESCHEDULE and response.countdown == NOT_CONFIGURED_RETRY
    assert sandbox.request(request_id)["status"] == "pending" and sandbox.vendor_effects() == []
    scheduled = app(sandbox, declared).run_due_timers({})
    assert scheduled.status == ResultType.SUCCESS and "no product is configured" in scheduled.output


def test_a_sqlite_journal_on_the_containers_disk_is_refused_unless_said_persistent(
    sandbox: Sandbox, tmp_path: Path, runner_logger: tuple[logging.Logger, list[logging.LogRecord]]
) -> None:
    config = variables(sandbox, tmp_path / "journal.db", persistent=False)
    request_id = accepted_requests(sandbox)[0]
    response = app(sandbox, config).handle_cancel_request(sandbox.request(request_id))
    assert response.status == ResultType.RESCHEDULE and response.countdown >= 300
    scheduled = app(sandbox, config).run_due_timers({})
    assert scheduled.status == ResultType.FAIL
    for text in (scheduled.output, "\n".join(r.getMessage() for r in runner_logger[1])):
        assert JOURNAL_URL in text and SQLITE_PERSISTENT in text
    assert not (tmp_path / "journal.db").exists() and sandbox.vendor_effects() == []

    approved = app(sandbox, {**config, SQLITE_PERSISTENT: "yes"}).handle_cancel_request(
        sandbox.request(request_id)
    )
    assert (
        approved.status == ResultType.SUCCESS
        and sandbox.request(request_id)["status"] == "approved"
    )


def test_the_installation_client_acts_not_the_extensions_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """An ``audience: vendor`` extension installed by another account: the runner's own client has
    a key the account does not accept here; the installation's key is the one that works."""
    config = variables(sandbox, tmp_path / "journal.db")
    first, second = accepted_requests(sandbox)[:2]
    wrong = "ApiKey SU-999-999-999:not-this-accounts-key"
    alone = app(sandbox, config, key=wrong).handle_cancel_request(sandbox.request(first))
    assert alone.status != ResultType.SUCCESS  # 401 from Connect: the request is not closed
    assert sandbox.request(first)["status"] == "pending"

    done = app(sandbox, config, key=wrong, installation_key=sandbox.api_key).handle_cancel_request(
        sandbox.request(second)
    )
    assert done.status == ResultType.SUCCESS and sandbox.request(second)["status"] == "approved"


def test_the_processors_events_go_to_the_runners_logger_one_line_each_with_fields(
    sandbox: Sandbox,
    tmp_path: Path,
    runner_logger: tuple[logging.Logger, list[logging.LogRecord]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    root_handlers = list(logging.getLogger().handlers)
    request_id = accepted_requests(sandbox)[0]
    response = app(sandbox, variables(sandbox, tmp_path / "journal.db")).handle_cancel_request(
        sandbox.request(request_id)
    )
    assert response.status == ResultType.SUCCESS
    assert logging.getLogger().handlers == root_handlers  # no basicConfig: no line printed twice
    records = runner_logger[1]
    changes = [r for r in records if getattr(r, "to_state", None)]
    assert [r.to_state for r in changes if r.request_id == request_id][-1] == "approved"
    assert {r.task_id for r in changes} == {"TQ-1"}  # the runner's task id, as on its own records
    assert all(r.name == RUNNER_LOGGER and "\n" not in r.getMessage() for r in records)
    assert all(r.getMessage().startswith("state_changed") for r in changes)
    assert "state_changed" not in capfd.readouterr().err  # nothing of the processor's on stderr
    key_secret = sandbox.api_key.rsplit(":", 1)[1]
    for record in records:
        assert key_secret not in record.getMessage() and SANDBOX_VENDOR_TOKEN not in str(
            vars(record)
        )


def _end_grace_now(journal: Path, request_id: str) -> None:
    """Fourteen days later, for a processor on the wall clock: the grace period's end in the row's
    dates and its timer moved to a second ago."""
    ended = datetime.now(UTC) - timedelta(seconds=1)
    with sqlite3.connect(journal) as db:
        db.execute(
            "UPDATE requests SET next_attempt_at = ?, data = json_set(data, '$.terminate_at', ?) "
            "WHERE request_id = ?",
            (ended.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ended.isoformat(), request_id),
        )


def test_the_schedulable_ends_a_grace_period_once(sandbox: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    config = variables(
        sandbox, journal, policies={"graceful": {"grace_days": 14}}, defaults={"policy": "graceful"}
    )
    request_id = accepted_requests(sandbox)[0]
    suspended = app(sandbox, config).handle_cancel_request(sandbox.request(request_id))
    assert suspended.status == ResultType.RESCHEDULE
    early = app(sandbox, config).run_due_timers({})
    assert early.status == ResultType.SUCCESS and early.output.startswith("0 due timer(s)")

    _end_grace_now(journal, request_id)
    fired = app(sandbox, config).run_due_timers({})
    assert fired.status == ResultType.SUCCESS and fired.output.startswith("1 due timer(s) run"), (
        fired.output
    )
    again = app(sandbox, config).run_due_timers({})
    assert again.output.startswith("0 due timer(s)")
    assert [e["action"] for e in sandbox.vendor_effects()] == ["suspend", "terminate"]
    assert sandbox.request(request_id)["status"] == "approved"


def test_the_schedulable_takes_over_a_claim_a_stopped_instance_left(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    journal_path = tmp_path / "journal.db"
    config = variables(sandbox, journal_path)
    request_id = accepted_requests(sandbox)[0]
    # Another runner instance claimed the request, began terminating, and was stopped.
    request = parse_request(sandbox.request(request_id))
    journal = open_journal(f"sqlite:///{journal_path}")
    try:
        journal.migrate()
        journal.ensure(
            request_id,
            idempotency_key=f"cancel-{request_id}",
            subscription_id=request.subscription_id,
            asset_id=request.asset_id,
            product_id=request.product_id,
            marketplace_id=request.marketplace_id,
            environment=request.environment,
            customer_id=request.customer_id,
        )
        claim = journal.claim(request_id, "stopped-instance:1:dead", 0.2)
        assert claim is not None
        journal.transition(claim, State.TERMINATING, attempts=1)
    finally:
        journal.close()
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while datetime.now(UTC) < deadline:  # bounded: the ghost's lease is 0.2 s
        result = app(sandbox, config).run_due_timers({})
        if "1 stranded claim(s) taken over" in result.output:
            break
    assert (
        result.status == ResultType.SUCCESS and "1 stranded claim(s) taken over" in result.output
    ), result.output
    assert sandbox.request(request_id)["status"] == "approved"
    assert [e["action"] for e in sandbox.vendor_effects()] == ["terminate"]


@pytest.mark.postgres
def test_on_postgresql_the_schedulable_ends_a_grace_period(
    sandbox: Sandbox, postgres_url: str
) -> None:
    """The recommended deployment: the journal in PostgreSQL (migrated once, beforehand), no SQLite
    consent needed, and the timer fired by the schedulable."""
    import psycopg
    from psycopg import sql

    schema = f"eaas_{uuid.uuid4().hex[:12]}"
    migrating = open_journal(postgres_url, schema=schema)
    try:
        migrating.migrate()  # `cancel-processor journal migrate`, before the first start
    finally:
        migrating.close()
    url = f"{postgres_url}?options=-csearch_path%3D{schema}"  # the schema, as a connection option
    data = sandbox.config_data(
        url, policies={"graceful": {"grace_days": 14}}, defaults={"policy": "graceful"}
    )
    config = {CONFIG_YAML: yaml.safe_dump(data), VENDOR_TOKEN_ENV: SANDBOX_VENDOR_TOKEN}
    request_id = accepted_requests(sandbox)[0]
    try:
        suspended = app(sandbox, config).handle_cancel_request(sandbox.request(request_id))
        assert suspended.status == ResultType.RESCHEDULE
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # fourteen days later
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            ended = datetime.now(UTC) - timedelta(seconds=1)
            conn.execute(
                "UPDATE requests SET next_attempt_at = %s, data = jsonb_set(data, "
                "'{terminate_at}', to_jsonb(%s::text)) WHERE request_id = %s",
                (ended, ended.isoformat(), request_id),
            )
        fired = app(sandbox, config).run_due_timers({})
        assert fired.status == ResultType.SUCCESS and fired.output.startswith(
            "1 due timer(s) run"
        ), fired.output
        assert [e["action"] for e in sandbox.vendor_effects()] == ["suspend", "terminate"]
        assert sandbox.request(request_id)["status"] == "approved"
    finally:
        RUNTIMES.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
