"""Shared by the ops server's tests: a hand-moved clock, a request put into a journal the way the
engine leaves it, a journal file, and ``serve`` for an ops server on a loopback port."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.journal import open_journal
from processor.journal.base import Journal, State
from processor.observe import Metrics
from processor.ops.readiness import make_readiness
from processor.ops.server import OpsServer, create_ops_app

TOKEN = "ops-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def put(
    journal: Journal,
    request_id: str,
    state: State,
    *,
    product: str = "PRD-100-200-300",
    subscription: str | None = None,
    detail: str | None = None,
    **fields: Any,
) -> None:
    """A request in ``state`` the way the engine leaves it: ensured, claimed, moved, released."""
    journal.ensure(
        request_id,
        idempotency_key=f"cancel-{request_id}",
        product_id=product,
        subscription_id=subscription or f"SUB-{request_id[3:]}",
        environment="production",
    )
    if state is State.NEW and not fields:
        return
    claim = journal.claim(request_id, "worker-1", 60)
    assert claim is not None
    claim = journal.transition(claim, state, detail=detail, **fields)
    journal.release(claim)


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    """A clock the test moves by hand (import it where these fixtures are used)."""
    return Clock()


@pytest.fixture(name="journal")
def journal_fixture(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    store = open_journal(f"sqlite:///{tmp_path / 'journal.db'}", clock=clock)
    store.migrate()
    yield store
    store.close()


def ready(journal: Journal) -> Callable[[], dict[str, Any]]:
    return make_readiness(journal=journal)


@pytest.fixture(name="serve")
def serve_fixture(journal: Journal) -> Iterator[Callable[..., httpx.Client]]:
    """``serve(**create_ops_app options)`` -> an HTTP client on a freshly started server."""
    started: list[tuple[OpsServer, httpx.Client]] = []

    def start(**options: Any) -> httpx.Client:
        options = {
            "journal": journal,
            "metrics": Metrics(),
            "readiness": ready(journal),
            "token": None,
            "bound_to_loopback": True,
            **options,
        }
        server = OpsServer(create_ops_app(**options), port=0).start()
        client = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.stop()


@pytest.fixture(name="mixed")
def mixed_fixture(journal: Journal, clock: Clock) -> Journal:
    """Eight requests across states, products and ages (PR-0001 oldest ... PR-0008 newest)."""
    rows = [
        ("PR-0001", State.APPROVED, "PRD-A", {"outcome": "terminated"}),
        (
            "PR-0002",
            State.FAILED,
            "PRD-A",
            {"outcome": "refused", "reason": "contract still running"},
        ),
        (
            "PR-0003",
            State.PARKED,
            "PRD-B",
            {"reason": "the vendor offers neither idempotency nor a status read"},
        ),
        (
            "PR-0004",
            State.TERMINATING,
            "PRD-B",
            {"attempts": 2, "last_error": "vendor answered 503"},
        ),
        (
            "PR-0005",
            State.WAITING_HUMAN,
            "PRD-A",
            {"reason": "enterprise plan: account manager decides"},
        ),
        ("PR-0006", State.PARKED, "PRD-A", {"reason": "no approve template for the product"}),
        ("PR-0007", State.NEW, "PRD-B", {}),
        ("PR-0008", State.APPROVED, "PRD-B", {"outcome": "already_gone"}),
    ]
    for request_id, state, product, fields in rows:
        clock.now += timedelta(minutes=1)
        put(journal, request_id, state, product=product, detail=fields.get("reason"), **fields)
    return journal


def section(html: str, anchor: str) -> str:
    """The part of the page from the heading with id ``anchor`` to the next heading."""
    start = html.index(f'id="{anchor}"')
    end = html.find("<h2", start)
    return html[start:] if end < 0 else html[start:end]


def listed(html: str) -> list[str]:
    return re.findall(r'<tr data-request="([^"]+)"', html)
