"""Issue 27 item 3: a vendor rate limit shared by the replicas of one PostgreSQL journal.

Three replicas (three runtimes, a journal pool each, eight workers each, in threads of this
process) backfill the sandbox's pending cancels against a mock vendor that answers 429 past
``N`` calls a second. Each replica is configured with the vendor's own limit: shared through the
journal, together they stay under it (no 429); each on its own, the same load is throttled (so
the test can fail). Waiting shows in the metrics and on the status page, and bad options name
the file and the key."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cancel_sandbox.local import Sandbox, adapter_options
from processor.config.schema import Config, ConfigError, load_config
from processor.daemon.core import Daemon
from processor.daemon.runtime import Runtime, build_runtime, selector_for
from processor.journal import open_journal
from processor.ops.readiness import make_readiness
from processor.ops.server import OpsServer, create_ops_app

from ..journal_support import fresh_postgres_schema

N = 10  # calls a second: the vendor's limit and each replica's configured one
REQUESTS = 66
REPLICAS = 3
RUN_LIMIT = 120.0  # seconds a backfill may take at most


@dataclass
class Backfill:
    seconds: float  # from the first vendor call to the last
    calls: int  # answered calls (not 429)
    throttled: int  # 429s from the vendor
    peak: int  # the most answered calls in one of the vendor's one-second windows
    per_replica: list[int]  # requests each replica settled
    runtimes: list[Runtime]


@contextlib.contextmanager
def fresh_schema(postgres_url: str) -> Iterator[str]:
    """A fresh, migrated schema, named in the URL (as a deployment would): dropped afterwards."""
    with fresh_postgres_schema(postgres_url, "rate_shared_test") as schema:
        setup = open_journal(postgres_url, schema=schema, connect_timeout=5)
        setup.migrate()
        setup.close()
        yield f"{postgres_url}{'&' if '?' in postgres_url else '?'}options=-csearch_path%3D{schema}"


def vendor_config(sandbox: Sandbox, url: str, **rate: Any) -> Config:
    options = {**adapter_options(sandbox.vendor.url, sandbox.mode), "rate": {"calls": N, **rate}}
    return Config.model_validate(
        sandbox.config_data(
            url,
            processing={"concurrency": 8, "once_max_wait": RUN_LIMIT / 2},
            adapters={"vendor": {"type": "http", "options": options}},
        )
    )


def backfill(sandbox: Sandbox, url: str, monkeypatch: pytest.MonkeyPatch, **rate: Any) -> Backfill:
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    config = vendor_config(sandbox, url, **rate)
    runtimes = [build_runtime(config) for _ in range(REPLICAS)]
    daemons = [Daemon(r.engine, r.marketplace, selector_for(config), once=True) for r in runtimes]
    threads = [threading.Thread(target=d.run) for d in daemons]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + RUN_LIMIT
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        for daemon in daemons:
            daemon.stop()
        for thread in threads:
            thread.join(timeout=30)
        pytest.fail(f"the backfill did not end in {RUN_LIMIT} s")
    calls = [c for c in sandbox.vendor_ledger()["calls"] if c["path"].startswith("/v1/")]
    answered = [c for c in calls if c["status_code"] != 429]
    stamps = sorted(c["at"] for c in answered)
    per_second = Counter(at[:19] for at in stamps)  # ISO time to the second: the vendor's windows
    first, last = (time.mktime(time.strptime(stamps[i][:19], "%Y-%m-%dT%H:%M:%S")) for i in (0, -1))
    owners = Counter(
        t.owner
        for record in runtimes[0].journal.records()
        for t in runtimes[0].journal.transitions(record.request_id)[-1:]
    )
    return Backfill(
        seconds=max(1.0, last - first + 1),
        calls=len(answered),
        throttled=len(calls) - len(answered),
        peak=max(per_second.values()),
        per_replica=[owners.get(r.owner, 0) for r in runtimes],
        runtimes=runtimes,
    )


def report(what: str, run: Backfill) -> str:
    rates = ", ".join(f"{n / run.seconds:.1f}" for n in run.per_replica)
    return (
        f"{what}: {run.calls + run.throttled} calls sent in {run.seconds:.0f} s "
        f"({(run.calls + run.throttled) / run.seconds:.1f}/s), {run.throttled} answered 429, "
        f"{run.calls} served ({run.calls / run.seconds:.1f}/s, peak {run.peak} in one of the "
        f"vendor's seconds; it allows {N}); "
        f"requests settled per replica {run.per_replica} ({rates} per second)"
    )


@pytest.mark.postgres
def test_three_replicas_share_the_vendors_limit_and_on_their_own_exceed_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = {"rate_calls": N, "rate_per": 1}
    with (
        Sandbox(generate=REQUESTS, seed=27, vendor_options=vendor) as sandbox,
        fresh_schema(postgres_url) as url,
    ):
        shared = backfill(sandbox, url, monkeypatch)
        try:
            print(report("shared", shared))
            check = sandbox.check()
            assert check.pending == 0 and check.duplicate_terminations == 0, check
            assert shared.throttled == 0 and shared.peak <= N, report("shared", shared)
            assert sum(shared.per_replica) == REQUESTS and all(shared.per_replica)
            page_shows_the_waits(shared.runtimes[0])
        finally:
            for runtime in shared.runtimes:
                runtime.close()

    with (
        Sandbox(generate=REQUESTS, seed=27, vendor_options=vendor) as sandbox,
        fresh_schema(postgres_url) as url,
    ):
        alone = backfill(sandbox, url, monkeypatch, shared=False)
        for runtime in alone.runtimes:
            runtime.close()
        print(report("each its own", alone))
        assert alone.throttled > 0, report("each its own", alone)  # so the test can fail
        assert sandbox.check().duplicate_terminations == 0


def page_shows_the_waits(runtime: Runtime) -> None:
    registry = runtime.metrics.registry
    labels = {"adapter": "vendor"}
    waits = registry.get_sample_value("cancel_vendor_rate_waits_total", labels)
    waited = registry.get_sample_value("cancel_vendor_rate_wait_seconds_total", labels)
    print(f"metrics: {waits:.0f} waits, {waited:.1f} s waited (the three replicas of this process)")
    assert waits and waits > 0 and waited and waited > 0
    assert registry.get_sample_value("cancel_vendor_rate_shared", labels) == 1
    assert registry.get_sample_value("cancel_vendor_rate_waiting", labels) == 0
    assert not registry.get_sample_value("cancel_vendor_rate_shared_errors_total", labels)
    app = create_ops_app(
        journal=runtime.journal,
        metrics=runtime.metrics,
        readiness=make_readiness(journal=runtime.journal),
        token=None,
        bound_to_loopback=True,
    )
    with OpsServer(app, port=0) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        html = client.get("/").text
        assert "Vendor rate limits" in html and 'data-adapter="vendor"' in html
        assert "shared by the replicas" in html
        assert f'<td class="n waits">{waits:.0f}</td>' in html
        scraped = client.get("/metrics").text
        assert 'cancel_vendor_rate_waiting{adapter="vendor"} 0.0' in scraped


# -- bad options name the file and the key ------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "journal", "key", "message"),
    [
        ({"calls": 0}, "sqlite", "rate.calls", "a whole number of calls, at least 1"),
        ({"calls": 5, "per": -2}, "sqlite", "rate.per", "a positive number of seconds"),
        ({"calls": 5, "shared": True}, "sqlite", "rate.shared", "needs a PostgreSQL journal"),
    ],
)
def test_bad_rate_options_name_the_file_and_the_key(
    tmp_path: Path, rate: dict[str, Any], journal: str, key: str, message: str
) -> None:
    options = {**adapter_options("https://vendor.test", "key"), "rate": rate}
    path = tmp_path / "processor.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "journal": {"url": f"sqlite:///{tmp_path / 'journal.db'}"},
                "adapters": {"vendor": {"type": "http", "options": options}},
                "defaults": {"adapter": "vendor"},
                "products": {"PRD-100-100-100": {"template": "TL-100-100-100"}},
            }
        )
    )
    config = load_config(path, environ={})
    environ = {"CONNECT_API_KEY": "key", "SANDBOX_VENDOR_TOKEN": "vendor-token"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOX_VENDOR_TOKEN", "vendor-token")
        with pytest.raises(ConfigError) as raised:
            build_runtime(config, environ=environ)
    text = str(raised.value)
    assert text.startswith(f"{path}: adapters.vendor: adapter 'vendor' (http): "), text
    assert f"option '{key}': " in text and message in text, text
