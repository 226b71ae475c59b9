"""The end-of-pass count (processor.daemon.completeness) in the daemon and in ``--once``, over a
marketplace whose listing hides a request that its count still sees (a listing gap)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from processor.daemon.completeness import DAEMON_MARGIN, RELISTS, Gap
from processor.daemon.core import Daemon
from processor.journal.base import Journal, State
from processor.marketplace import Selector

from ..fakes import Clock, FakeMarketplace, ScriptedAdapter, cancel_payload
from .test_engine import PRODUCT, engine_for


class HidingMarketplace(FakeMarketplace):
    """Lists every pending request but those in ``hidden``; counts them all (as Connect would)."""

    def __init__(self, requests: list[dict[str, Any]], hidden: set[str]) -> None:
        super().__init__(requests)
        self.hidden = hidden
        self.counts = 0
        self.selectors: list[Selector] = []

    def iter_cancels(self, selector: Selector, status: str) -> Iterator[dict[str, Any]]:
        for request in super().iter_cancels(selector, status):
            if request["id"] not in self.hidden:
                yield request

    def count_unaccounted(
        self, selector: Selector, accounted: Any, *, names: int = 10
    ) -> tuple[int, list[str]]:
        self.counts += 1
        self.selectors.append(selector)
        return super().count_unaccounted(selector, accounted, names=names)


def _setup(journal: Journal, clock: Clock, hidden: int) -> tuple[HidingMarketplace, Any]:
    payloads = [cancel_payload(n, product=PRODUCT) for n in range(4)]
    market = HidingMarketplace(payloads, {p["id"] for p in payloads[:hidden]})
    engine = engine_for(journal, ScriptedAdapter(), market, clock, once_max_wait=0, notes=False)
    return market, engine


def test_the_daemon_reports_a_gap_in_one_line_and_a_gauge(journal: Journal, clock: Clock) -> None:
    market, engine = _setup(journal, clock, hidden=1)
    daemon = Daemon(engine, market, Selector(products=(PRODUCT,)))
    with capture_logs() as logs:
        daemon.run_pass()
    gaps = [line for line in logs if line["event"] == "pass_incomplete"]
    assert len(gaps) == 1 and gaps[0]["left"] == 1, logs
    hidden = next(iter(market.hidden))
    assert gaps[0]["request_ids"] == [hidden]
    gauge = engine.metrics.registry.get_sample_value("cancel_pending_unaccounted")
    assert gauge == 1
    market.hidden.clear()  # the listing sees it again: the next pass closes the gap
    with capture_logs() as logs:
        daemon.run_pass()
    assert not [line for line in logs if line["event"] == "pass_incomplete"]
    assert engine.metrics.registry.get_sample_value("cancel_pending_unaccounted") == 0


def test_once_lists_again_a_bounded_number_of_times_then_is_unfinished_naming_what_is_left(
    journal: Journal, clock: Clock
) -> None:
    market, engine = _setup(journal, clock, hidden=2)
    summary = Daemon(engine, market, Selector(products=(PRODUCT,)), once=True).run()
    assert summary.passes == RELISTS + 1
    assert market.counts == RELISTS + 1
    assert summary.unaccounted == 2
    assert set(summary.unaccounted_names) == market.hidden
    assert not summary.complete
    assert "2 pending request(s)" in Gap(2, summary.unaccounted_names).describe()


def test_once_is_complete_when_what_is_left_waits_by_design(journal: Journal, clock: Clock) -> None:
    # The hidden request is routed to a person in the journal: pending on Connect by design.
    market, engine = _setup(journal, clock, hidden=1)
    routed = next(iter(market.hidden))
    journal.ensure(routed, idempotency_key="k-routed")
    journal.force(routed, State.WAITING_HUMAN, detail="routed by policy", actor="test")
    summary = Daemon(engine, market, Selector(products=(PRODUCT,)), once=True).run()
    assert summary.complete, summary
    assert summary.passes == 1 and market.counts == 1
    assert summary.unaccounted == 0


def test_the_count_covers_what_was_created_before_the_run_or_the_pass(
    journal: Journal, clock: Clock
) -> None:
    # Cancels customers make while a pass runs are the next pass's: not a gap, not a failure.
    market, engine = _setup(journal, clock, hidden=0)
    Daemon(engine, market, Selector(products=(PRODUCT,)), once=True).run()
    assert market.selectors[-1].created_until == clock().replace(microsecond=0)
    assert market.selectors[-1].products == (PRODUCT,)
    Daemon(engine, market, Selector(products=(PRODUCT,))).run_pass()
    assert market.selectors[-1].created_until == (clock() - DAEMON_MARGIN).replace(microsecond=0)
    earlier = clock() - timedelta(days=3)
    Daemon(engine, market, Selector(created_until=earlier)).run_pass()
    assert market.selectors[-1].created_until == earlier  # a narrower selection stays


def test_an_id_that_cannot_travel_in_rql_is_left_out_of_the_accounted_list(
    journal: Journal, clock: Clock
) -> None:
    market, engine = _setup(journal, clock, hidden=0)
    journal.ensure("../requests/PR-1", idempotency_key="k-odd")
    journal.force("../requests/PR-1", State.PARKED, detail="old row", actor="test")
    journal.ensure("PR-0000-0000-0000-777", idempotency_key="k-good")
    journal.force("PR-0000-0000-0000-777", State.PARKED, detail="parked", actor="test")
    seen: list[set[str]] = []
    original = market.count_unaccounted

    def spy(selector: Selector, accounted: Any, *, names: int = 10) -> tuple[int, list[str]]:
        ids = set(accounted)
        seen.append(ids)
        return original(selector, ids, names=names)

    market.count_unaccounted = spy  # type: ignore[method-assign]
    Daemon(engine, market, Selector(products=(PRODUCT,)), once=True).run()
    assert seen and "PR-0000-0000-0000-777" in seen[-1]
    assert "../requests/PR-1" not in seen[-1]
