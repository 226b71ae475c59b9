"""Processor throughput, CPU cost and memory, as ratios, measured in this process (extra figures).

Run: ``python -m bench.processor_throughput``. What users run is measured by
:mod:`bench.as_users_run` (the ``cancel-processor`` command in a child process, the example
configuration's defaults, a bare loop beside it): the README's headline figures come from there.
Sections 1-3 below run the engine in this process with warning-level logs and notes off, which
flatters it; keep their figures as extra, labelled rows.

1. Concurrency sweep with set latencies (default 50 ms marketplace, 100 ms vendor): requests/s and
   the ratio to the ideal ``concurrency / (vendor latency + approve latency)``.
2. Zero latency: CPU milliseconds per request, and the ratio to a bare loop that makes the same
   HTTP calls (list pages, terminate, approve) with no journal, no retries, no logging.
3. The legacy SDK's FulfillmentAutomation on the same kind of servers, as a baseline.
4. A large backlog with ``run --once`` in a child process: peak RSS and time per request, against
   a backlog a tenth of the size (it should stay flat).

The mocks run in processes of their own (bench/servers.py); the processor runs in this process
(1-3) or a child (4). Nothing here asserts: it prints, and the README quotes what it printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.servers import VENDOR_TOKEN, MockServers
from cancel_sandbox.marketplace import DEFAULT_API_KEY
from processor.config.schema import Config
from processor.daemon.core import Daemon
from processor.daemon.runtime import build_runtime, selector_for
from processor.observe import configure_logging


def process_once(
    servers: MockServers, concurrency: int, notes: bool = False
) -> tuple[int, float, float]:
    """Run the processor in this process until the backlog is drained: (requests, seconds, cpu
    seconds)."""
    workdir = tempfile.mkdtemp(prefix="bench-")
    config = Config.model_validate(
        servers.config_data(f"sqlite:///{workdir}/journal.db", concurrency, notes)
    )
    os.environ.update(servers.environ())
    runtime = build_runtime(config)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = Daemon(runtime.engine, runtime.marketplace, selector_for(config), once=True).run()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        runtime.close()
    done = summary.results["approved"] + summary.results["failed"]
    return done, elapsed, cpu


@dataclass(frozen=True)
class SweepRow:
    concurrency: int
    requests: int
    seconds: float
    ideal: float  # requests/s: concurrency / (vendor latency + approve latency)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.ideal


def sweep_rows(
    concurrencies: list[int],
    per_worker: int,
    market_ms: float,
    vendor_ms: float,
    notes: bool = False,
) -> list[SweepRow]:
    """One drained backlog per concurrency (``concurrency x per_worker`` requests, at least 60)."""
    rows = []
    for concurrency in concurrencies:
        n = max(60, concurrency * per_worker)
        with MockServers(n, market_ms, vendor_ms) as servers:
            done, elapsed, _ = process_once(servers, concurrency, notes=notes)
        rows.append(
            SweepRow(concurrency, done, elapsed, concurrency / ((vendor_ms + market_ms) / 1000))
        )
    return rows


def sweep(args: argparse.Namespace) -> None:
    print(
        f"\n## Concurrency sweep: marketplace {args.market_latency_ms:.0f} ms, "
        f"vendor {args.vendor_latency_ms:.0f} ms\n"
    )
    print("| concurrency | requests | seconds | requests/s | ideal/s | ratio to ideal |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency in args.concurrency:
        [r] = sweep_rows(
            [concurrency], args.per_worker, args.market_latency_ms, args.vendor_latency_ms
        )
        print(
            f"| {r.concurrency} | {r.requests} | {r.seconds:.2f} | {r.rate:.1f} | "
            f"{r.ideal:.1f} | {r.ratio:.2f} |",
            flush=True,
        )
    [r] = sweep_rows(
        [max(args.concurrency)],
        args.per_worker,
        args.market_latency_ms,
        args.vendor_latency_ms,
        notes=True,
    )
    print(
        f"\nWith a conversation note per request (two more marketplace calls each), concurrency "
        f"{r.concurrency}: {r.rate:.1f} requests/s, ratio to the same ideal {r.ratio:.2f}."
    )


def bare_loop(servers: MockServers, concurrency: int) -> tuple[int, float]:
    """The same HTTP calls with nothing else: list a page, terminate, approve. (requests, cpu s)."""
    local = __import__("threading").local()
    products = servers.products()
    templates = {}
    auth = {"Authorization": DEFAULT_API_KEY}
    for pid in products:
        reply = requests.get(
            f"{servers.endpoint}/products/{pid}/templates?eq(scope,asset)&eq(type,fulfillment)",
            headers=auth,
            timeout=30,
        )
        templates[pid] = reply.json()[0]["id"]

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session  # type: ignore[no-any-return]

    def one(request: dict[str, Any]) -> None:
        s = session()
        sub = next(p["value"] for p in request["asset"]["params"] if p["id"] == "subscription_id")
        s.post(
            f"{servers.vendor_url}/v1/subscriptions/{sub}/terminate",
            json={"request_id": request["id"]},
            headers={
                "Authorization": f"Bearer {VENDOR_TOKEN}",
                "Idempotency-Key": f"b-{request['id']}",
            },
            timeout=30,
        )
        s.post(
            f"{servers.endpoint}/requests/{request['id']}/approve",
            json={"template_id": templates[request["asset"]["product"]["id"]]},
            headers=auth,
            timeout=30,
        )

    done = 0
    cpu0 = time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        while True:
            page = requests.get(
                f"{servers.endpoint}/requests?and(eq(type,cancel),eq(status,pending))&ordering(created,id)"
                f"&select(-activation_key,-template)&limit=100",
                headers=auth,
                timeout=60,
            ).json()
            if not page:
                break
            list(pool.map(one, page))
            done += len(page)
    return done, time.process_time() - cpu0


@dataclass(frozen=True)
class CpuCost:
    concurrency: int
    requests: int
    cpu_ms: float  # processor CPU ms per request
    bare_requests: int
    bare_cpu_ms: float  # the bare loop's CPU ms per request
    seconds: float  # the processor's wall time

    @property
    def ratio(self) -> float:
        return self.cpu_ms / self.bare_cpu_ms


def cpu_cost_result(n: int, concurrency: int = 8) -> CpuCost:
    """Zero latency: the processor's CPU per request against a bare loop's, on ``n`` requests
    each."""
    with MockServers(n) as servers:
        done, elapsed, cpu = process_once(servers, concurrency)
    with MockServers(n) as servers:
        bare_done, bare_cpu = bare_loop(servers, concurrency)
    return CpuCost(
        concurrency, done, cpu / done * 1000, bare_done, bare_cpu / bare_done * 1000, elapsed
    )


def cpu_cost(args: argparse.Namespace) -> None:
    r = cpu_cost_result(args.cpu_requests)
    print(f"\n## Zero latency, concurrency {r.concurrency}, {args.cpu_requests} requests\n")
    print("| run | requests | CPU ms/request | ratio to bare loop |")
    print("|---|---:|---:|---:|")
    print(
        f"| bare loop (same HTTP calls, no journal) | {r.bare_requests} | "
        f"{r.bare_cpu_ms:.2f} | 1.00 |"
    )
    print(
        f"| processor (journal, retries, logs, metrics) | {r.requests} | {r.cpu_ms:.2f} | "
        f"{r.ratio:.2f} |"
    )
    print(f"\nProcessor wall time: {r.seconds:.2f} s ({r.requests / r.seconds:.0f} requests/s).")


@dataclass(frozen=True)
class LegacyBaseline:
    requests: int
    legacy_rate: float  # connect-sdk FulfillmentAutomation, approvals/s (it calls no vendor)
    processor_rates: dict[
        int, float
    ]  # concurrency -> this processor's requests/s (vendor call + approve)


def legacy_result(
    n: int, market_ms: float, vendor_ms: float, concurrencies: list[int]
) -> LegacyBaseline | str:
    """The legacy SDK's rate and this processor's on the same servers, or why there is no
    baseline."""
    from bench.legacy_env import LegacyEnvError, legacy_python, run_legacy

    try:
        python = legacy_python()
    except LegacyEnvError as exc:
        return f"legacy SDK baseline skipped: {exc}"
    with MockServers(n, market_ms, vendor_ms) as servers:
        templates = {}
        for pid in servers.products():
            reply = requests.get(
                f"{servers.endpoint}/products/{pid}/templates?eq(scope,asset)&eq(type,fulfillment)",
                headers={"Authorization": DEFAULT_API_KEY},
                timeout=30,
            )
            templates[pid] = reply.json()[0]["id"]
        done, summary = run_legacy(python, servers.endpoint, DEFAULT_API_KEY, templates)
    if summary is None:
        return f"legacy run failed: exit {done.returncode}: {done.stderr[-500:]}"
    rates = {}
    for concurrency in concurrencies:
        with MockServers(n, market_ms, vendor_ms) as servers:
            got, elapsed, _ = process_once(servers, concurrency)
        rates[concurrency] = got / elapsed
    return LegacyBaseline(n, float(summary["approved_per_second"]), rates)


def legacy(args: argparse.Namespace) -> None:
    n = args.legacy_requests
    r = legacy_result(n, args.market_latency_ms, args.vendor_latency_ms, [1, max(args.concurrency)])
    if isinstance(r, str):
        print(f"\n({r})")
        return
    print(
        f"\n## Legacy SDK baseline: {n} requests, marketplace {args.market_latency_ms:.0f} ms, "
        f"vendor {args.vendor_latency_ms:.0f} ms\n"
    )
    print("| client | requests/s | ratio to legacy |")
    print("|---|---:|---:|")
    # The legacy script never calls a vendor; it only approves (so it does less work per request).
    print(
        "| connect-sdk FulfillmentAutomation (approve only, no vendor call) | "
        f"{r.legacy_rate:.1f} | 1.00 |"
    )
    for concurrency, rate in r.processor_rates.items():
        print(
            f"| this processor, concurrency {concurrency} (vendor call + approve) | {rate:.1f} | "
            f"{rate / r.legacy_rate:.2f} |"
        )


def backlog(args: argparse.Namespace) -> None:
    print("\n## Backlog with `run --once` (child process, zero latency, concurrency 16)\n")
    print("| backlog | seconds | ms/request | peak RSS MB |")
    print("|---:|---:|---:|---:|")
    rows = []
    for n in (args.backlog // 10, args.backlog):
        with MockServers(n) as servers, tempfile.TemporaryDirectory() as workdir:
            config = Path(workdir) / "processor.yaml"
            config.write_text(
                yaml.safe_dump(servers.config_data(f"sqlite:///{workdir}/journal.db", 16))
            )
            env = {**os.environ, **servers.environ()}
            t0 = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            done = subprocess.run(
                [sys.executable, "-m", "processor", "run", "--once", "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
            )
            elapsed = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if done.returncode != 0:
                print(f"(run failed: {done.stdout[-800:]} {done.stderr[-800:]})")
            rss = max(peak, before) / 1024  # ru_maxrss is KiB on Linux; the largest child so far
            rows.append((n, elapsed))
            print(f"| {n} | {elapsed:.1f} | {elapsed / n * 1000:.2f} | {rss:.0f} |", flush=True)
    (small, t_small), (large, t_large) = rows
    print(
        f"\nTime per request, {large} vs {small}: ratio "
        f"{(t_large / large) / (t_small / small):.2f} (1.00 is flat)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16, 32]
    )
    parser.add_argument(
        "--per-worker", type=int, default=30, help="requests per worker in each sweep run"
    )
    parser.add_argument("--market-latency-ms", type=float, default=50)
    parser.add_argument("--vendor-latency-ms", type=float, default=100)
    parser.add_argument("--cpu-requests", type=int, default=3000)
    parser.add_argument("--legacy-requests", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--only", choices=["sweep", "cpu", "legacy", "backlog"], action="append")
    args = parser.parse_args()
    configure_logging("error", "json")
    parts = args.only or ["sweep", "cpu", "legacy", "backlog"]
    for part in parts:
        {"sweep": sweep, "cpu": cpu_cost, "legacy": legacy, "backlog": backlog}[part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
