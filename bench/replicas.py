"""Throughput of 1, 2 and 4 replica processes on one PostgreSQL journal, as ratios to the ideal.

Run: ``python -m bench.replicas [--postgres-url URL] [--replicas 1,2,4] [--concurrency 8]``.

Each run starts the mocks as processes of their own (bench/servers.py: marketplace 50 ms, vendor
100 ms by default), a fresh journal schema, and N ``cancel-processor run`` daemons with the same
concurrency. Every daemon polls the whole pending list and the journal's claims share the work out.
The rate is measured from the marketplace's pending count, sampled every ~0.15 s (a pause plus the
marketplace latency), from the first sample that shows an approval to the first that shows none
left, so interpreter start-up is left out; the ideal is ``replicas x concurrency /
(vendor + approve latency)``. The table also shows the wall time from start to an empty backlog and
the CPU the replicas and mocks used per wall second (PostgreSQL's own CPU is not counted).

The machine's cores bound what more replicas can add: on a small machine the mocks, PostgreSQL and
the replicas share the CPU, and the ratio falls for that reason, not for the journal's. Nothing here
asserts; it prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from bench.daemons import Daemon, fresh_schema
from bench.servers import MockServers

DEFAULT_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Result:
    replicas: int
    concurrency: int
    requests: int
    approved: int
    rate: float  # approvals per second, first to last
    wall: float  # seconds from start to an empty backlog
    cores: (
        float  # CPU seconds of the replicas and the mocks per wall second (PostgreSQL not counted)
    )
    exits: list[int | str]  # exit statuses, or why there is none


def approved(servers: MockServers) -> int:
    """Approvals the marketplace recorded (its own ledger: what happened, not what clients
    believed)."""
    count, since = 0, 0
    for _ in range(1000):  # pages of 10,000 entries
        page = requests.get(
            f"{servers.market_url}/admin/ledger",
            params={"since": since, "limit": 10000},
            timeout=60,
        ).json()
        if not page["entries"]:
            break
        count += sum(
            1
            for e in page["entries"]
            if e["kind"] == "request" and e["event"] == "status" and e["to"] == "approved"
        )
        since = page["entries"][-1]["seq"]
    return count


def run(
    postgres_url: str,
    replicas: int,
    concurrency: int,
    per_worker: int,
    market_ms: float,
    vendor_ms: float,
    timeout: float,
) -> Result:
    n = replicas * concurrency * per_worker
    cpu_before = _children_cpu()
    with (
        fresh_schema(postgres_url, prefix="bench_replicas") as journal_url,
        MockServers(n, market_ms, vendor_ms) as servers,
        tempfile.TemporaryDirectory() as workdir,
    ):
        data = servers.config_data(journal_url, concurrency)
        data["journal"].update({"pool_size": concurrency + 2, "lease_seconds": 30})
        data["processing"].update({"poll_interval": 0.5})
        data["http"] = {"enabled": False}  # replicas on one host would contend for the status port
        config = Path(workdir) / "processor.yaml"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        env = {**os.environ, **servers.environ()}
        subprocess.run(
            [sys.executable, "-m", "processor", "journal", "migrate", "--config", str(config)],
            env=env,
            check=True,
            capture_output=True,
        )
        daemons = [
            Daemon(f"replica-{i}", config, env, Path(workdir) / f"replica-{i}.log")
            for i in range(replicas)
        ]
        started = time.perf_counter()
        try:
            for daemon in daemons:
                daemon.start()
            deadline = started + timeout
            first: tuple[float, int] | None = None  # (when, pending) at the first sign of progress
            pending = n
            while time.perf_counter() < deadline and pending > 0:
                pending = servers.pending()  # one call takes the marketplace latency
                if first is None and pending < n:
                    first = (time.perf_counter(), pending)
                time.sleep(0.1)  # counting is CPU work for the mock: leave it to the replicas
            last = time.perf_counter()
            wall = last - started
        finally:
            exits = [daemon.stop(60) for daemon in daemons]
        for daemon, code in zip(daemons, exits, strict=True):
            if code != 0:
                tail = daemon.log.read_text(encoding="utf-8", errors="replace")[-1500:]
                print(
                    f"(a replica exited with {code}; the end of its log:)\n{tail}", file=sys.stderr
                )
        done = approved(servers)
    cores = (_children_cpu() - cpu_before) / wall  # the mocks' start-up and shutdown included
    rate = (
        (first[1] - pending) / (last - first[0])
        if first is not None and last > first[0]
        else float("nan")
    )
    return Result(replicas, concurrency, n, done, rate, wall, cores, exits)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children only
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4]
    )
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads per replica")
    parser.add_argument(
        "--per-worker", type=int, default=40, help="requests per worker thread in each run"
    )
    parser.add_argument("--market-latency-ms", type=float, default=50)
    parser.add_argument("--vendor-latency-ms", type=float, default=100)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take")
    args = parser.parse_args()
    per_request = (args.market_latency_ms + args.vendor_latency_ms) / 1000
    print(
        f"\n## Replicas on PostgreSQL: marketplace {args.market_latency_ms:.0f} ms, vendor "
        f"{args.vendor_latency_ms:.0f} ms, concurrency {args.concurrency} per replica, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| replicas | requests | approved | approvals/s | ideal/s | ratio to ideal | wall s | CPU "
        "cores busy | exit codes |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for replicas in args.replicas:
        r = run(
            args.postgres_url,
            replicas,
            args.concurrency,
            args.per_worker,
            args.market_latency_ms,
            args.vendor_latency_ms,
            args.timeout,
        )
        ideal = replicas * args.concurrency / per_request
        print(
            f"| {r.replicas} | {r.requests} | {r.approved} | {r.rate:.1f} | {ideal:.1f} | "
            f"{r.rate / ideal:.2f} | {r.wall:.1f} | {r.cores:.2f} | {','.join(map(str, r.exits))} "
            "|",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
