"""Like for like: the benchmark's bare loop makes exactly the calls ``cancel-processor run --once``
makes for the same work, counted by the mocks themselves, in every configuration the benchmark
publishes (notes on and off; a backlog that ends on a full page and one that does not; enough
workers that several need one product's template at once). Without this, a ratio between the two
compares different work, and ``bench.as_users_run`` prints none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.as_users_run import bare, processor, unlike
from bench.servers import MockServers

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("size", "notes"), [(100, False), (130, True), (130, False), (200, True)])
def test_the_bare_loop_makes_the_processors_calls(size: int, notes: bool, tmp_path: Path) -> None:
    with MockServers(size) as servers:
        baseline = bare(servers, 16, tmp_path, "requests", notes)
    with MockServers(size) as servers:
        run = processor(servers, 16, tmp_path, None, notes)
    assert run.requests == baseline.requests == size
    assert unlike(run, baseline) is None, unlike(run, baseline)
    # The counts are the work's own: one terminate and one approve per request, (with notes) one
    # conversation look-up and one message, and a listing call per page.
    calls = run.calls
    assert calls["vendor POST /v1/subscriptions/{id}/terminate"] == size
    assert calls["connect POST /public/v1/requests/{id}/approve"] == size
    assert calls.get("connect POST /public/v1/conversations/{id}/messages", 0) == (
        size if notes else 0
    )
    print(f"{size} requests, notes {'on' if notes else 'off'}: {calls}")


def test_the_openapi_client_baseline_makes_the_same_calls(tmp_path: Path) -> None:
    with MockServers(60) as servers:
        plain = bare(servers, 8, tmp_path, "requests", True)
    with MockServers(60) as servers:
        openapi = bare(servers, 8, tmp_path, "openapi", True)
    assert unlike(openapi, plain) is None, unlike(openapi, plain)
