"""The rate limit's shared mode (processor.adapters.rate) with a scripted slot taker: waiting is
counted and shown while it lasts (metrics, the status page), a taker that fails sends calls to
this process's own slots without asking the journal again at every call, and the options are
checked by name."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from processor.adapters import AdapterError
from processor.adapters.rate import SHARED_RETRY, RateLimit, RateSettings, rate_settings
from processor.observe import Metrics
from processor.ops import page

DEADLINE = 10.0  # seconds any wait in these tests may take at most


def value(metrics: Metrics, name: str, adapter: str = "vendor") -> float:
    got = metrics.registry.get_sample_value(name, {"adapter": adapter})
    return 0.0 if got is None else got


def test_a_shared_limit_sleeps_as_the_journal_says_and_counts_the_wait() -> None:
    metrics = Metrics(CollectorRegistry())
    answers = iter([0.25, 0.1, 0.0])
    asked: list[tuple[str, int, float]] = []
    slept: list[float] = []

    def take(adapter: str, calls: int, window: float) -> float:
        asked.append((adapter, calls, window))
        return next(answers)

    limit = RateLimit(RateSettings(calls=3, per=2.0, slack=0.5), sleep=slept.append)
    limit.share("vendor", take)
    assert limit.shared and value(metrics, "cancel_vendor_rate_shared") == 1
    waited = limit.acquire("vendor")
    assert slept == [0.25, 0.1] and asked == [("vendor", 3, 2.5)] * 3
    assert waited >= 0 and value(metrics, "cancel_vendor_rate_waits_total") == 1
    assert value(metrics, "cancel_vendor_rate_waiting") == 0
    assert value(metrics, "cancel_vendor_rate_waiting_since_timestamp_seconds") == 0
    limit.share("vendor", None)  # back to this process's own
    assert not limit.shared and value(metrics, "cancel_vendor_rate_shared") == 0
    limit.close()


def test_a_wait_in_progress_shows_in_the_metrics_and_on_the_status_page() -> None:
    metrics = Metrics(CollectorRegistry())
    release = threading.Event()

    def take(adapter: str, calls: int, window: float) -> float:
        return 0.0 if release.is_set() else 0.02

    limit = RateLimit(RateSettings(calls=1, per=1.0))
    limit.share("vendor", take)
    waiter = threading.Thread(target=limit.acquire, args=("vendor",))
    waiter.start()
    deadline = time.monotonic() + DEADLINE
    while value(metrics, "cancel_vendor_rate_waiting") < 1:
        assert time.monotonic() < deadline, "the waiting call never showed"
        time.sleep(0.01)
    time.sleep(0.2)
    [view] = page.rate_views(metrics, time.time())
    assert view.adapter == "vendor" and view.shared and view.waiting == 1
    assert 0.2 <= view.longest < DEADLINE
    html = page.render_index(index_view(rates=[view]), nonce="n")
    assert 'data-adapter="vendor"' in html and "shared by the replicas" in html
    assert '<td class="n waiting">1</td>' in html

    release.set()
    waiter.join(timeout=DEADLINE)
    assert not waiter.is_alive()
    [view] = page.rate_views(metrics, time.time())
    assert view.waiting == 0 and view.longest == 0 and view.waits == 1 and view.waited >= 0.2
    limit.close()


def index_view(**fields: Any) -> page.IndexView:
    from processor.ops.listing import Filters, Listing

    return page.IndexView(
        counts={},
        filters=Filters(),
        recent=Listing(records=[], scanned=0, truncated=False),
        parked=[],
        waiting=[],
        journal_url="sqlite:///j.db",
        generated_at=datetime.now(UTC),
        back="/",
        **fields,
    )


def test_no_rate_limited_adapter_says_so_on_the_status_page() -> None:
    assert "No adapter has a rate limit." in page.render_index(index_view(), nonce="n")


def test_a_failing_journal_sends_calls_to_the_process_own_slots_for_a_while() -> None:
    metrics = Metrics(CollectorRegistry())
    asked: list[str] = []

    def take(adapter: str, calls: int, window: float) -> float:
        asked.append(adapter)
        raise ConnectionError("the database is gone")

    limit = RateLimit(RateSettings(calls=5, per=60.0))
    limit.share("vendor", take)
    started = time.monotonic()
    for _ in range(5):  # within this process's own 5 slots: no wait
        assert limit.acquire("vendor") == 0.0
    assert time.monotonic() - started < SHARED_RETRY  # so the journal was asked once only
    assert asked == ["vendor"]
    assert value(metrics, "cancel_vendor_rate_shared_errors_total") == 1
    assert limit.shared  # still configured to share: the journal is asked again later
    # Not closed: pyrate-limiter's leak thread, started with the bucket a moment ago, fails an
    # assertion when its bucket is gone before it first runs (a daemon, it ends with the tests).


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ({"calls": 5, "per": -1}, "option 'rate.per': expected a positive number of seconds"),
        ({"calls": 5, "shared": "yes"}, "option 'rate.shared': expected true or false"),
    ],
)
def test_bad_rate_options_name_the_key(rate: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterError, match=message):
        rate_settings(rate)


def test_the_shared_option_defaults_to_where_the_journal_can() -> None:
    read: Callable[[Any], RateSettings | None] = rate_settings
    assert read({"calls": 2}) == RateSettings(2, 1.0)
    settings = read({"calls": 2, "per": 3, "shared": False})
    assert settings is not None and settings.shared is False and settings.window == 3.1
