"""The status page in a real headless Chromium: it loads, lists what the journal holds, and its
Retry button sends a parked request back to new. Saves a screenshot to ``artifacts/status-page.png``
and ``docs/status-page.png`` when ``UPDATE_DOCS_SCREENSHOT=1``. Needs the ``playwright`` Python
package and a system Chromium at /usr/bin/chromium (Debian's ``chromium`` package; Playwright's own
browser download is not used). Skipped without them on a developer's machine; a failure under
CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from processor.journal import open_journal
from processor.journal.base import Journal, State
from processor.observe import Metrics
from processor.ops.readiness import make_readiness
from processor.ops.server import OpsServer, create_ops_app
from tests.conftest import REPO, need_or_skip
from tests.ops_support import Clock, put

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# What a morning's journal could hold: (request, state, product, fields), oldest first.
REQUESTS: list[tuple[str, State, str, dict[str, Any]]] = [
    ("PR-5852-1506-4463-001", State.APPROVED, "PRD-276-377-545", {"outcome": "terminated"}),
    ("PR-5852-1506-4471-001", State.APPROVED, "PRD-276-377-545", {"outcome": "already_gone"}),
    (
        "PR-6127-0380-2212-001",
        State.FAILED,
        "PRD-861-570-450",
        {
            "outcome": "refused",
            "reason": "The subscription has a 12-month commitment ending 2030-09-30.",
        },
    ),
    (
        "PR-6127-0380-2230-001",
        State.PARKED,
        "PRD-861-570-450",
        {
            "outcome": "ambiguous",
            "last_error": "read timeout after 60 s",
            "reason": (
                "the vendor call may have acted and the vendor offers neither idempotency nor a "
                "status read"
            ),
        },
    ),
    (
        "PR-7431-2290-1181-001",
        State.WAITING_HUMAN,
        "PRD-276-377-545",
        {"reason": "enterprise plan: the account manager confirms every cancellation"},
    ),
    (
        "PR-7431-2290-1199-001",
        State.TERMINATING,
        "PRD-276-377-545",
        {
            "attempts": 2,
            "outcome": "retry_later",
            "last_error": "vendor answered 503 Service Unavailable",
        },
    ),
    ("PR-7431-2290-1204-001", State.SCHEDULED, "PRD-861-570-450", {}),
    (
        "PR-8004-5521-0042-001",
        State.PARKED,
        "PRD-276-377-545",
        {"reason": "no approve template for the product"},
    ),
    ("PR-8004-5521-0057-001", State.APPROVED, "PRD-861-570-450", {"outcome": "terminated"}),
    ("PR-8004-5521-0063-001", State.NEW, "PRD-276-377-545", {}),
]
RETRIED = "PR-8004-5521-0042-001"


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_or_skip("the playwright package is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        need_or_skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Journal]:
    monkeypatch.chdir(
        tmp_path
    )  # a relative URL: the page (and the screenshot) shows no machine path
    clock = Clock()
    clock.now -= timedelta(hours=3)
    store = open_journal("sqlite:///cancel-processor.db", clock=clock)
    store.migrate()
    for request_id, state, product, fields in REQUESTS:
        clock.now += timedelta(minutes=11)
        put(
            store,
            request_id,
            state,
            product=product,
            subscription=f"AS-{request_id[3:17]}",
            detail=fields.get("reason"),
            **fields,
        )
    yield store
    store.close()


def test_the_status_page_in_a_browser_lists_the_journal_and_retries_a_parked_request(
    browser: Any, journal: Journal
) -> None:
    app = create_ops_app(
        journal=journal,
        metrics=Metrics(),
        readiness=make_readiness(journal=journal),
        token=None,
        bound_to_loopback=True,
    )
    with OpsServer(app, port=0) as server:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(f"{server.url}/")

        assert page.title() == "Cancel processor status"
        recent = page.locator("#recent ~ table tbody tr")
        newest_first = [request_id for request_id, *_ in reversed(REQUESTS)]
        assert recent.evaluate_all("rows => rows.map(r => r.dataset.request)") == newest_first
        assert page.locator('.tile[data-state="parked"] b').inner_text() == "2"
        parked = page.locator("#parked + table tbody tr")
        assert parked.evaluate_all("rows => rows.map(r => r.dataset.request)") == [
            RETRIED,
            "PR-6127-0380-2230-001",
        ]

        with page.expect_navigation():
            page.locator(f'button[data-retry="{RETRIED}"]').click()

        assert f"{RETRIED} was sent back to new" in page.locator(".note").inner_text()
        row = page.locator(f'#recent ~ table tr[data-request="{RETRIED}"]')
        assert row.locator("td.state").inner_text() == "new"
        assert page.locator('.tile[data-state="parked"] b').inner_text() == "1"
        assert journal.get(RETRIED).state is State.NEW  # type: ignore[union-attr]

        page.locator(f'#recent ~ table a:text-is("{RETRIED}")').click()
        page.wait_for_url(f"**/requests/{RETRIED}")
        timeline = page.locator("table tbody tr").all_inner_texts()
        assert [line.split("\t")[1:3] for line in timeline] == [
            ["new", "parked"],
            ["parked", "new"],
        ]

        page.goto(f"{server.url}/")
        artifacts = REPO / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if (
            os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
        ):  # the README's picture, refreshed on request
            shutil.copyfile(shot, REPO / "docs" / "status-page.png")
