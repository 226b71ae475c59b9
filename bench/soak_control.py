"""The soak's hands on the running system: the mocks' faults and counters (through their admin
endpoints), whether the daemons still run, and whether the work has come to rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from bench.daemons import Daemon
from bench.soak_plan import CLIENT_TIMEOUT, SoakSettings
from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import Sandbox
from processor.journal import open_journal
from processor.journal.base import FINAL_STATES, State

__all__ = ["DaemonDied", "Mocks", "ensure_running", "journal_open_and_parked", "wait_quiet"]


class Mocks:
    """Fault settings of both mocks, set at run time through their admin endpoints."""

    def __init__(self, sandbox: Sandbox, settings: SoakSettings, seed: int) -> None:
        self.sandbox, self.settings, self._seed = sandbox, settings, seed

    def _put(self, base_url: str, faults: FaultSettings) -> None:
        self._seed += (
            1  # each change re-seeds the middleware's draw; deterministic from the run's seed
        )
        faults.seed = self._seed
        response = requests.put(f"{base_url}/admin/faults", json=faults.as_dict(), timeout=10)
        response.raise_for_status()

    def set(self, storm: str | None, drops: bool) -> None:
        """The background (base latency, and a share of dropped POSTs when ``drops``) plus
        ``storm``."""
        s = self.settings
        market = FaultSettings(
            latency_ms=s.market_latency_ms, drop_rate=s.drop_rate if drops else 0.0, methods="POST"
        )
        vendor = FaultSettings(
            latency_ms=s.vendor_latency_ms, drop_rate=s.drop_rate if drops else 0.0, methods="POST"
        )
        both = (market, vendor)
        if storm == "5xx":
            for f in both:
                f.error_rate, f.methods = 0.5, "GET,POST,PUT,DELETE"
        elif storm == "429":
            for f in both:
                f.throttle_rate, f.retry_after, f.methods = 0.5, 1.0, "GET,POST,PUT,DELETE"
        elif storm == "drops":
            for f in both:
                f.drop_rate = 0.3
        elif storm == "latency":
            for f in both:  # beyond the clients' read timeout: every call in the storm times out
                f.latency_ms, f.latency_jitter_ms = CLIENT_TIMEOUT * 1000 + 500, 1000
        elif storm == "vendor-down":
            vendor.error_rate, vendor.methods = 1.0, "GET,POST,PUT,DELETE"
        self._put(self.sandbox.marketplace.url, market)
        self._put(self.sandbox.vendor.url, vendor)

    def counters(self) -> dict[str, int]:
        market = requests.get(f"{self.sandbox.marketplace.url}/admin/stats", timeout=30).json()[
            "faults"
        ]
        vendor = requests.get(f"{self.sandbox.vendor.url}/admin/faults", timeout=30).json()["stats"]
        return {
            k: int(market.get(k, 0)) + int(vendor.get(k, 0))
            for k in ("errors", "throttles", "drops", "delayed")
        }

    def pending(self) -> int:
        stats = requests.get(f"{self.sandbox.marketplace.url}/admin/stats", timeout=30).json()
        return int(stats["cancels_by_status"].get("pending", 0))

    def seed_more(self, count: int) -> set[str]:
        response = requests.post(
            f"{self.sandbox.marketplace.url}/admin/seed", json={"generate": count}, timeout=300
        )
        response.raise_for_status()
        return set(response.json()["created"])


def journal_open_and_parked(journal_url: str) -> tuple[int, int]:
    journal = open_journal(journal_url, pool_size=1)
    try:
        counts = journal.counts()
    finally:
        journal.close()
    return sum(n for state, n in counts.items() if state not in FINAL_STATES), counts.get(
        State.PARKED, 0
    )


class DaemonDied(RuntimeError):
    """A daemon exited without being told to: the soak stops, with the end of its log."""


def ensure_running(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is not None:
            tail = (
                daemon.log.read_text(encoding="utf-8", errors="replace")[-2000:]
                if daemon.log.exists()
                else ""
            )
            raise DaemonDied(
                f"{daemon.name} exited by itself with {daemon.process.returncode}:\n{tail}"
            )


def wait_quiet(
    mocks: Mocks, journal_url: str, budget: float, say: Callable[[str], None], daemons: list[Daemon]
) -> float | None:
    """Seconds until nothing is left to do (nothing open in the journal, nothing pending on Connect
    but what is parked), or None if the budget ran out first."""
    started = time.monotonic()
    last_report = started
    while time.monotonic() - started < budget:
        ensure_running(daemons)
        open_rows, parked = journal_open_and_parked(journal_url)
        pending = mocks.pending()
        if open_rows == 0 and pending <= parked:
            return time.monotonic() - started
        if time.monotonic() - last_report > 15:
            say(
                f"waiting: {pending} pending on Connect, {open_rows} open in the journal, "
                f"{parked} parked"
            )
            last_report = time.monotonic()
        time.sleep(0.5)
    return None
