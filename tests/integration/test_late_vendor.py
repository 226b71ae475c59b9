"""A vendor that applies a call after its client stopped waiting, against the real mocks.

The mock vendor answers ``504`` at once and applies each terminate ``DELAY`` seconds later
(:mod:`cancel_sandbox.vendor.late`), in mode ``read`` (a status read, no idempotency). A status
read in between says "active". With an apply horizon shorter than the delay the processor takes
that for proof, terminates again, and the vendor applies both: the mock shows the duplicate the
world would make. With the horizon covering the delay, "active" is not believed before the last
send plus the lease plus the horizon; by then the first call has been applied, the status read
says "terminated", and no subscription is terminated twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.late import LateSettings
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.journal import open_journal
from processor.journal.base import State

DELAY = 3.0  # seconds from receipt to application at the vendor
LEASE = 2.0


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    late = LateSettings(delay=DELAY)
    with Sandbox(generate=4, seed=11, vendor_mode="read", vendor_options={"late": late}) as box:
        for name, value in box.environ().items():
            monkeypatch.setenv(name, value)
        yield box


def run_once(sandbox: Sandbox, tmp_path: Path, horizon: float) -> dict[str, State]:
    data: dict[str, Any] = sandbox.config_data(
        f"sqlite:///{tmp_path / 'journal.db'}",
        processing={"retry_base": 0.2, "retry_max": 0.5, "once_max_wait": 40, "notes": False},
    )
    data["journal"] = {**data.get("journal", {}), "lease_seconds": LEASE}
    data["adapters"]["vendor"]["apply_horizon"] = horizon
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    config = Config.model_validate({**data, "source": str(path)})
    runtime = build_runtime(config)
    try:
        Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True).run()
    finally:
        runtime.close()
    journal = open_journal(config.journal.url)
    try:
        return {r.request_id: r.state for r in journal.records()}
    finally:
        journal.close()


def effects_by_subscription(sandbox: Sandbox) -> dict[str, int]:
    """Terminations per subscription, once the vendor applied every call it received (calls
    still pending when the run ended are applied later: they count)."""
    deadline = time.monotonic() + DELAY * 3
    while requests.get(f"{sandbox.vendor.url}/admin/late", timeout=5).json()["pending"]:
        assert time.monotonic() < deadline, "the mock vendor did not apply its pending calls"
        time.sleep(0.1)
    counts: dict[str, int] = {}
    for effect in sandbox.vendor_ledger()["effects"]:
        if effect["action"] == "terminate":
            counts[effect["subscription_id"]] = counts.get(effect["subscription_id"], 0) + 1
    return counts


def test_a_horizon_shorter_than_the_vendors_delay_terminates_twice(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """What the mock can now show: "active" believed after the lease alone (2 s < 3 s)."""
    states = run_once(sandbox, tmp_path, horizon=0)
    assert set(states.values()) <= {State.APPROVED, State.FAILED}
    effects = effects_by_subscription(sandbox)
    assert effects and max(effects.values()) == 2, effects


def test_a_horizon_covering_the_delay_terminates_each_subscription_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    states = run_once(sandbox, tmp_path, horizon=DELAY + 1)
    assert set(states.values()) <= {State.APPROVED, State.FAILED}
    assert State.APPROVED in states.values()
    effects = effects_by_subscription(sandbox)
    assert effects and set(effects.values()) == {1}, effects
    calls = [c for c in sandbox.vendor_ledger()["calls"] if c["action"] == "terminate"]
    assert len(calls) == len(effects)  # one terminate call each: "active" was never believed
