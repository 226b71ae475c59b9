"""Latency users feel: from a customer's cancel to its approval, while the daemon runs.

Run: ``python -m bench.latency`` (``--help`` for sizes). For each poll interval (the example's as
shipped, and 5 s), on fresh mocks in processes of their own (marketplace and vendor latencies as
given): the installed ``cancel-processor run`` (the daemon, not ``--once``) with the example
configuration pointed at the mocks, while cancels are created at a steady rate through the mock's
admin API. Creation time is taken by this process when the mock answers; approval time is the
marketplace ledger's (the same machine's clock). It prints p50, p99 and the worst against what a
poller can do at best: half the poll interval on average (a cancel waits for the next pass), the
whole interval at worst, plus the calls' round trips (vendor, approve, notes).

Nothing here asserts: it prints, and the README quotes what it printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests
import yaml

from bench.as_users_run import user_config
from bench.servers import VENDOR_TOKEN, MockServers
from cancel_sandbox.marketplace import DEFAULT_API_KEY

__all__ = ["main", "measure"]

SEED_FOR_PRODUCTS = 8  # cancels present at start: they give the configuration its products


def _approved_at(market_url: str) -> dict[str, float]:
    """Request id -> epoch seconds at which the marketplace recorded its approval."""
    found: dict[str, float] = {}
    since = 0
    for _ in range(10_000):  # bounded: a ledger page is 1,000 entries
        page = requests.get(
            f"{market_url}/admin/ledger", params={"since": since, "limit": 1000}, timeout=60
        ).json()
        entries = page["entries"]
        for entry in entries:
            if entry["kind"] == "request" and entry["event"] == "status":
                if entry.get("to") == "approved":
                    found[entry["id"]] = datetime.fromisoformat(entry["at"]).timestamp()
        if not entries:
            return found
        since = entries[-1]["seq"]
    return found


def measure(
    poll_interval: float, rate: float, seconds: float, market_ms: float, vendor_ms: float
) -> list[float]:
    """Seconds from creation to approval of each cancel created during the steady phase."""
    with MockServers(SEED_FOR_PRODUCTS, market_ms, vendor_ms) as servers:
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            workdir = Path(tmp)
            data = user_config(servers, workdir, concurrency=8)
            data["processing"]["poll_interval"] = poll_interval
            config = workdir / "processor.yaml"
            config.write_text(yaml.safe_dump(data))
            script = Path(sys.executable).with_name("cancel-processor")
            argv = [str(script)] if script.exists() else [sys.executable, "-m", "processor"]
            env = {
                **os.environ,
                "CONNECT_API_KEY": DEFAULT_API_KEY,
                "VENDOR_API_TOKEN": VENDOR_TOKEN,
            }
            with (workdir / "daemon.log").open("wb") as log:
                daemon = subprocess.Popen(
                    [*argv, "run", "--config", str(config)], env=env, stdout=log, stderr=log
                )
            try:
                created: dict[str, float] = {}
                start = time.monotonic()
                for i in range(int(rate * seconds)):
                    # Steady: the i-th cancel at i / rate seconds, whatever the calls took.
                    time.sleep(max(0.0, start + i / rate - time.monotonic()))
                    reply = requests.post(
                        f"{servers.market_url}/admin/seed", json={"generate": 1}, timeout=30
                    )
                    reply.raise_for_status()
                    now = time.time()
                    created.update({rid: now for rid in reply.json()["created"]})
                deadline = time.monotonic() + poll_interval + 120
                approved: dict[str, float] = {}
                while time.monotonic() < deadline:
                    approved = _approved_at(servers.market_url)
                    if all(rid in approved for rid in created):
                        break
                    time.sleep(1.0)
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
            missing = [rid for rid in created if rid not in approved]
            if missing:
                tail = (workdir / "daemon.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{len(missing)} cancels never approved\n{tail}")
            return [approved[rid] - at for rid, at in created.items()]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shipped = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "config" / "processor.example.yaml").read_text()
    )["processing"]["poll_interval"]
    parser.add_argument(
        "--poll",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[float(shipped), 5.0],
        help=f"poll intervals to run (default: as shipped, {shipped} s, and 5 s)",
    )
    parser.add_argument("--rate", type=float, default=2.0, help="cancels created per second")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long cancels are created")
    parser.add_argument("--market-latency-ms", type=float, default=50)
    parser.add_argument("--vendor-latency-ms", type=float, default=100)
    args = parser.parse_args(argv)
    trip = (args.vendor_latency_ms + 3 * args.market_latency_ms) / 1000  # terminate, approve, note
    print(
        f"\n## Creation to approval while the daemon runs: {args.rate:g} cancels/s for "
        f"{args.seconds:g} s, marketplace {args.market_latency_ms:g} ms, vendor "
        f"{args.vendor_latency_ms:g} ms\n"
    )
    print(
        "| poll interval | cancels | p50 s | p99 s | worst s | best possible p50 "
        "(interval/2 + calls) | worst possible (interval + calls) | p50 / best |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for poll in args.poll:
        waits = measure(
            poll, args.rate, args.seconds, args.market_latency_ms, args.vendor_latency_ms
        )
        p50, p99 = statistics.median(waits), _quantile(waits, 0.99)
        best = poll / 2 + trip
        print(
            f"| {poll:g} s | {len(waits)} | {p50:.2f} | {p99:.2f} | {max(waits):.2f} | "
            f"{best:.2f} | {poll + trip:.2f} | {p50 / best:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
