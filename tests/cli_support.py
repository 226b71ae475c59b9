"""Shared by the tests that run the installed CLI in its own process against the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from cancel_sandbox.local import Sandbox


def write_config(tmp_path: Path, sandbox: Sandbox, **sections: Any) -> Path:
    """The sandbox's configuration with an SQLite journal in ``tmp_path`` and Connect retries cut
    short (two quick attempts), so a failure the CLI reports arrives within a second."""
    data = sandbox.config_data(f"sqlite:///{tmp_path / 'journal.db'}", **sections)
    data["connect"]["retry"] = {"max_attempts": 2, "backoff_base": 0.05, "backoff_max": 0.1}
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CROWDED_SECOND = datetime(2026, 10, 1, 9, 30, 15, tzinfo=UTC)


def pending_cancels(box: Sandbox) -> list[str]:
    """The ids of the cancels the sandbox's marketplace holds pending, sorted."""
    store = box.market_app.store
    with store.lock:
        return sorted(
            r.id for r in store.requests.values() if r.type == "cancel" and r.status == "pending"
        )


def crowd_pending(box: Sandbox, spread: timedelta) -> list[str]:
    """Move every pending cancel to :data:`CROWDED_SECOND` plus a fraction (``spread`` apart), the
    fractions falling as the ids rise: a server's (second, id) order is not the served order."""
    store = box.market_app.store
    ids = pending_cancels(box)
    with store.change():
        for n, request_id in enumerate(ids):
            request = store.requests[request_id]
            store.index.remove(request)
            request.created = CROWDED_SECOND + spread * (len(ids) - n) + timedelta(microseconds=123)
            store.index.add(request)
    return ids
