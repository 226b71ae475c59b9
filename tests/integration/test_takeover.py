"""Claims a dead or frozen process left behind are taken over within a lease or so, not when the
listing next reaches them: on a large backlog that is a whole pass later (the replicas test shows
it across real processes; these show it on one daemon, against the sandbox's real HTTP servers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import Runtime, build_runtime, selector_for
from processor.journal.base import State
from processor.marketplace import Selector
from processor.model import parse_request

from ..mock_support import sandbox_api

LEASE = 2.0  # the daemon's lease: it looks for stranded claims every half lease
GHOST_LEASE = 0.2  # the dead process's lease, run out before the daemon starts
POLL = 60.0  # the daemon's poll interval, far longer than its lease


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # A slow vendor, so a pass over the backlog takes seconds and the order of work shows.
    with Sandbox(generate=30, seed=21, vendor_faults=FaultSettings(latency_ms=40, seed=2)) as box:
        yield box


@pytest.fixture
def runtime(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    data = sandbox.config_data(
        f"sqlite:///{tmp_path}/journal.db",
        journal={"lease_seconds": LEASE},
        processing={"concurrency": 1, "notes": False, "poll_interval": POLL},
    )
    made = build_runtime(Config.model_validate(data))
    try:
        yield made
    finally:
        made.close()


def strand(runtime: Runtime, request_id: str, state: State, lease: float = GHOST_LEASE) -> int:
    """What a process killed mid-step leaves: the row claimed by it, moved to ``state``, never
    released. The fence of its claim."""
    journal = runtime.engine.journal
    request = parse_request(runtime.marketplace.get_request(request_id))
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
    claim = journal.claim(request_id, "ghost-host:999999:dead", lease)
    assert claim is not None
    if state is not State.NEW:
        claim = journal.transition(claim, state, attempts=1)
    return claim.fence


def listed(runtime: Runtime) -> list[str]:
    return [str(p["id"]) for p in runtime.marketplace.iter_pending(Selector())]


def test_a_sweep_takes_over_stranded_claims_without_the_listing(
    sandbox: Sandbox, runtime: Runtime
) -> None:
    journal = runtime.engine.journal
    mid_call, withdrawn, alive, *untouched = listed(runtime)
    fence = strand(runtime, mid_call, State.TERMINATING)  # died during the vendor call
    strand(runtime, withdrawn, State.NEW)  # died at the start; then a person failed it on Connect
    sandbox.act(withdrawn, "fail", {"reason": "the customer changed their mind"})
    strand(runtime, alive, State.TERMINATING, lease=600)  # a live holder: not stranded
    time.sleep(GHOST_LEASE + 0.3)

    daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(runtime.config))
    assert daemon.sweeps.take_over() == 2
    daemon.pool.drain(30)

    taken = journal.get(mid_call)
    assert (
        taken is not None and taken.state in (State.APPROVED, State.FAILED) and taken.fence > fence
    )
    # The vendor call the ghost may have made is replayed under the same key, not made twice.
    subscription = sandbox.request(mid_call)["asset"]["id"]
    assert len([e for e in sandbox.vendor_effects(subscription) if not e.get("duplicate")]) <= 1
    assert journal.transitions(mid_call)[-1].owner == runtime.engine.owner
    settled = journal.get(withdrawn)
    assert (
        settled is not None and settled.state is State.CLOSED
    )  # settled from Connect; no vendor call
    assert sandbox.vendor_effects(sandbox.request(withdrawn)["asset"]["id"]) == []
    held = journal.get(alive)
    assert (
        held is not None
        and held.state is State.TERMINATING
        and held.lease_owner == "ghost-host:999999:dead"
    )
    assert all(
        journal.get(rid) is None for rid in untouched
    )  # the listing did not run: the sweep did it
    registry = runtime.engine.metrics.registry
    assert registry.get_sample_value("cancel_stranded_claims_total") == 2
    assert daemon.sweeps.take_over() == 0  # not again before half a lease


def test_a_stranded_claim_is_taken_over_early_in_a_pass_not_when_the_listing_reaches_it(
    sandbox: Sandbox, runtime: Runtime
) -> None:
    order = listed(runtime)
    last = order[-1]
    strand(runtime, last, State.TERMINATING)
    time.sleep(GHOST_LEASE + 0.3)
    finished: list[str] = []
    daemon = Daemon(
        runtime.engine,
        runtime.marketplace,
        selector_for(runtime.config),
        once=True,
        on_result=lambda rid, result: finished.append(rid),
    )
    summary = daemon.run()
    assert summary.complete, summary
    assert set(finished) >= set(order)
    # One worker, requests in listing order: without the sweep the stranded one would come last.
    assert finished.index(last) < 3, finished
    record = runtime.engine.journal.get(last)
    assert record is not None and record.final and record.lease_owner is None


def test_a_stranded_claim_the_policy_now_ignores_is_read_once(
    sandbox: Sandbox, runtime: Runtime
) -> None:
    rid = listed(runtime)[0]
    strand(runtime, rid, State.NEW)
    time.sleep(GHOST_LEASE + 0.3)
    # A narrowed run that does not select the request leaves the stranded claim alone.
    narrowed = Daemon(
        runtime.engine, runtime.marketplace, Selector(request_ids=("PR-0000-0000-0000-000",))
    )
    assert narrowed.sweeps.take_over() == 0
    daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(runtime.config))
    runtime.engine.policy.decide = lambda request, released=False: _ignore(request)  # type: ignore[method-assign]
    assert daemon.sweeps.take_over() == 1
    daemon.pool.drain(10)
    daemon.sweeps.next_takeover = 0.0
    assert daemon.sweeps.take_over() == 0  # same claim, same fence: not read from Connect again
    record = runtime.engine.journal.get(rid)
    assert record is not None and record.state is State.NEW


def _ignore(request: object) -> object:
    from processor.policy.rules import Decision

    return Decision(action="ignore", reason="the policy changed since")


def test_a_claim_stranded_between_passes_is_taken_over_before_the_next_poll(
    sandbox: Sandbox, runtime: Runtime
) -> None:
    import threading

    daemon = Daemon(runtime.engine, runtime.marketplace, selector_for(runtime.config))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        for _ in range(300):  # bounded: about 30 s for the first pass over the backlog
            if daemon.summary.passes >= 1:
                break
            time.sleep(0.1)
        assert daemon.summary.passes == 1
        # While the daemon waits for its next poll, another process claims a new cancel and dies.
        asset = sandbox_api(sandbox, "GET", "assets?status=active&limit=1")[0]
        created = sandbox_api(
            sandbox, "POST", "requests", {"type": "cancel", "asset": {"id": asset["id"]}}
        )
        strand(runtime, created["id"], State.TERMINATING)
        record = None
        for _ in range(100):  # bounded: about 10 s, against the minute to the next poll
            record = runtime.engine.journal.get(created["id"])
            if record is not None and record.final:
                break
            time.sleep(0.1)
        assert record is not None and record.final, record
        assert daemon.summary.passes == 1  # taken over while idle, not by a second pass
    finally:
        daemon.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
