"""Retry waits end on shutdown, and the progress lines of a slow Connect.

Unit level: ``responses`` answers every call with a 503, so the gateway backs off; the stop event
set during the backoff ends the call at once with :class:`Stopping` (a TransientError: the request
is deferred, never refused). The bound on the wait is the test's safety net, not an assertion on
speed: without the stop the backoff would last minutes.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import responses

from processor.cli.ticker import Ticker
from processor.marketplace import (
    ConnectGateway,
    GatewaySettings,
    Selector,
    Stopping,
    TransientError,
)
from processor.marketplace.retry import Waiting

ENDPOINT = "https://connect.example/public/v1"


def test_a_backoff_under_way_ends_with_stopping_when_the_stop_event_is_set() -> None:
    settings = GatewaySettings(
        endpoint=ENDPOINT,
        api_key="ApiKey SU-1:secret-123456",
        max_attempts=6,
        backoff_base=300.0,
        backoff_max=600.0,
    )
    stop = threading.Event()
    market = ConnectGateway(settings)  # no injected sleep: waits are on the stop event
    market.stop_on(stop)
    outcome: list[Any] = []
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add(responses.GET, f"{ENDPOINT}/requests/PR-1", status=503, json={"errors": ["down"]})

        def call() -> None:
            try:
                outcome.append(market.get_request("PR-1"))
            except TransientError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        while (
            not market.waiting() or market.waiting()[0].attempt < 2
        ):  # the first 503 came, a backoff runs
            worker.join(0.01)
            assert worker.is_alive(), outcome
        stop.set()
        worker.join(30)
        assert not worker.is_alive(), "the backoff did not end on stop"
        assert isinstance(outcome[0], Stopping) and outcome[0].cause == "shutdown"
        assert len(http.calls) == 1  # no further attempt once stopping
    assert market.waiting() == []


def test_no_retry_wait_starts_once_stopping() -> None:
    stop = threading.Event()
    stop.set()
    settings = GatewaySettings(
        endpoint=ENDPOINT, api_key="ApiKey SU-1:secret-123456", backoff_base=300.0
    )
    market = ConnectGateway(settings)
    market.stop_on(stop)
    with responses.RequestsMock() as http:
        http.add(
            responses.GET, re.compile(re.escape(f"{ENDPOINT}/requests") + ".*"), status=503, json={}
        )
        try:
            list(market.iter_pending(Selector()))
        except Stopping as exc:
            assert "shutting down" in str(exc)
        else:
            raise AssertionError("listed while stopping")
        assert len(http.calls) == 1  # the call under way was made; no retry after it


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_line_names_the_call_the_wait_the_attempt_and_the_cause() -> None:
    clock = _Clock()
    calls = [Waiting("list_pending", since=80.0, attempt=3, cause="timeout")]
    ticker = Ticker(lambda: calls, "https://connect.example/public/v1", clock=clock, max_attempts=6)
    assert ticker.line() == (
        "cancel-processor: waiting for Connect at https://connect.example/public/v1: "
        "list_pending for 20 s, attempt 3 of 6, last try: timeout; Ctrl-C stops"
    )
    calls[:] = [Waiting("list_pending", since=99.0)]  # answered promptly so far: nothing to say
    assert ticker.line() is None
    calls[:] = []
    assert ticker.line() is None
