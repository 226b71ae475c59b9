"""The Connect gateway against the local mock marketplace over real HTTP, with faults on every
route. (Retries, actions, notes and keyset paging on faked HTTP:
tests/unit/test_marketplace_gateway_*.py.)"""

from __future__ import annotations

from processor.marketplace import ConnectGateway, GatewaySettings, Selector

from ..gateway_support import FakeTime, fake_time_fixture  # noqa: F401 - fixtures

# -- against the local mock marketplace (a real HTTP server) ------------------------------------


def test_iter_pending_and_approve_against_the_mock_marketplace_with_faults(
    fake_time: FakeTime,
) -> None:
    """Through uvicorn and the fault middleware: 5xx, 429 and apply-then-drop on every route.
    Every pending cancel is listed once and approved exactly once, as the ledger shows."""
    from cancel_sandbox.faults import FaultSettings
    from cancel_sandbox.marketplace import MarketplaceSettings, create_app
    from processor.ops.serving import ServerThread

    faults = FaultSettings(
        error_rate=0.08, throttle_rate=0.04, retry_after=2, drop_rate=0.08, seed=11
    )
    app = create_app(MarketplaceSettings(generate=240, seed=5, faults=faults))
    with ServerThread(app) as server:
        market = ConnectGateway(
            GatewaySettings(
                endpoint=f"{server.url}/public/v1",
                api_key=app.config.api_key,
                page_size=50,
                max_attempts=12,
            ),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=fake_time.wall_clock,
        )
        try:
            expected = market.count_pending(Selector())
            seen = []
            for request in market.iter_pending(Selector()):
                seen.append(request["id"])
                template = market.default_template(request["asset"]["product"]["id"])
                assert market.approve(request["id"], template or "")["status"] == "approved"
            app.update(FaultSettings())
            left = market.count_pending(Selector())
        finally:
            market.close()
    approvals = [
        e
        for e in app.store.ledger.since(0, limit=100_000)
        if e.event == "status" and e.after == "approved"
    ]
    assert expected == 240 and len(seen) == len(set(seen)) == expected and left == 0
    assert sorted(e.id for e in approvals) == sorted(seen)  # one approval each, none repeated
    assert app.stats.errors and app.stats.throttles and app.stats.drops  # the faults did happen
