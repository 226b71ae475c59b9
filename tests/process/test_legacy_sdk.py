"""The legacy connect-sdk 22.0 against the mock marketplace: the baseline must run unchanged.

connect-sdk pins requests 2.21 and six 1.12, which conflict with this project's environment, so it
lives in its own virtualenv, built once and cached in ``$XDG_CACHE_HOME`` (or ``~/.cache``) under
``cancel-processor/legacy-sdk-venv``; a missing or broken one is rebuilt (about ten seconds with a
package index at hand, at most a few minutes). Without an index to install from the test skips on
a developer's machine and fails in CI. The script it runs, ``bench/legacy_sdk_processor.py``, is
the benchmarks' legacy baseline; nothing in the SDK is patched or worked around.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench import legacy_env
from cancel_sandbox.marketplace import MarketplaceSettings, approve_template, create_app
from processor.ops.serving import ServerThread
from tests.conftest import need_or_skip

# The SDK reads one page of at most 1000 requests and never pages: stay well below it.
PENDING_CANCELS = 40

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The interpreter of a virtualenv holding connect-sdk 22.0 and its old pins."""
    try:
        return legacy_env.legacy_python()
    except legacy_env.LegacyEnvError as exc:
        need_or_skip(str(exc))
        raise


@pytest.fixture
def marketplace() -> Iterator[tuple[Any, ServerThread]]:
    app = create_app(MarketplaceSettings(generate=PENDING_CANCELS, seed=11))
    with ServerThread(app) as server:
        yield app, server


def _pending(app: Any) -> tuple[set[str], set[str]]:
    with app.store.lock:
        pending = [r for r in app.store.requests.values() if r.status == "pending"]
    return {r.id for r in pending if r.type == "cancel"}, {
        r.id for r in pending if r.type != "cancel"
    }


def _ledger(server: ServerThread) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    since = 0
    for _ in range(100):  # bounded: 100 pages of 1000 is far more than this test makes
        page = requests.get(
            f"{server.url}/admin/ledger", params={"since": since}, timeout=10
        ).json()
        entries += page["entries"]
        if not page["entries"] or entries[-1]["seq"] >= page["last_seq"]:
            return entries
        since = entries[-1]["seq"]
    raise AssertionError("the ledger did not end")


def _run_legacy(
    python: Path, server: ServerThread, api_key: str, templates: dict[str, str]
) -> dict[str, Any]:
    done, summary = legacy_env.run_legacy(
        python, f"{server.url}/public/v1", api_key, templates, timeout=120
    )
    assert api_key not in done.stdout + done.stderr
    assert done.returncode == 0 and summary is not None, (
        f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-3000:]}"
    )
    return summary


def test_legacy_sdk_approves_every_pending_cancel_through_the_mock_marketplace(
    legacy_python: Path, marketplace: tuple[Any, ServerThread]
) -> None:
    app, server = marketplace
    cancels, others = _pending(app)
    assert len(cancels) == PENDING_CANCELS and others  # purchases too: the SDK must skip them
    templates = {pid: approve_template(product) for pid, product in app.store.products.items()}

    summary = _run_legacy(legacy_python, server, app.config.api_key, templates)

    assert summary["sdk"] == "connect-sdk 22.0"
    assert summary["listed"] == len(cancels) + len(others)
    assert (summary["cancels"], summary["approved"]) == (len(cancels), len(cancels))
    assert (summary["approve_failed"], summary["skipped"]) == (0, len(others))
    assert summary["elapsed_seconds"] > 0

    ledger = _ledger(server)
    approvals = [e for e in ledger if e["kind"] == "request" and e["to"] == "approved"]
    assert sorted(e["id"] for e in approvals) == sorted(cancels)  # each once, nothing else
    assert {e["actor"] for e in approvals} == {app.config.key_id}
    with app.store.lock:
        for entry in approvals:
            request = app.store.requests[entry["id"]]
            assert entry["from"] == "pending"
            assert entry["detail"] == templates[request.asset.product.id]
        assert {app.store.requests[rid].status for rid in others} == {"pending"}
    # The SDK looks up each request's conversation and notes the outcome there: the approvals,
    # and also every skip (so a skipped request gets the same note again on every pass).
    noted = Counter(e["id"] for e in ledger if e["kind"] == "message")
    assert noted == Counter(cancels | others)
