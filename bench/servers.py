"""The mock marketplace and mock vendor as separate processes, for benchmarks.

Running them in processes of their own keeps their CPU out of the measured process's GIL and
CPU time, as a real Connect and a real vendor would be. Each binds a port of its own choosing and
reports it (:mod:`bench.mock_child`), so no free port is picked here and taken by someone else
before the child binds it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cancel_sandbox.marketplace import DEFAULT_API_KEY
from cancel_sandbox.traffic import TRAFFIC_PATH
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES

__all__ = ["MockServers", "VENDOR_TOKEN"]

VENDOR_TOKEN = "bench-vendor-token"


def _port(port_file: Path, process: subprocess.Popen[bytes], timeout: float = 600) -> int:
    """The port the child bound, once it has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"{port_file.name}: server exited with {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{port_file.name}: server did not report its port")


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}: server did not start")


@dataclass
class MockServers:
    generate: int
    market_latency_ms: float = 0.0
    vendor_latency_ms: float = 0.0
    vendor_mode: str = "key"
    seed: int = 7
    # Seconds each mock may take to exit after SIGTERM before it is killed. uvicorn's graceful
    # shutdown waits for requests in flight, which a mock delaying every call by a minute keeps
    # open; a test that made it so slow has no use for those answers.
    stop_grace: float = 10.0

    def __enter__(self) -> MockServers:
        env = {**os.environ, "MOCK_VENDOR_TOKEN": VENDOR_TOKEN}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self._ports = tempfile.TemporaryDirectory(prefix="bench-ports-")
        ports = Path(self._ports.name)
        child = [sys.executable, "-m", "bench.mock_child"]
        self.market = subprocess.Popen(
            [
                *child,
                str(ports / "market"),
                "mock-marketplace",
                "--generate",
                str(self.generate),
                "--seed",
                str(self.seed),
                "--latency-ms",
                str(self.market_latency_ms),
            ],
            **quiet,  # type: ignore[call-overload]
        )
        self.vendor = subprocess.Popen(
            [
                *child,
                str(ports / "vendor"),
                "mock-vendor",
                "--mode",
                self.vendor_mode,
                "--refuse-pattern",
                "^$",
                "--latency-ms",
                str(self.vendor_latency_ms),
            ],
            **quiet,  # type: ignore[call-overload]
        )
        self.market_port = _port(ports / "market", self.market)
        self.vendor_port = _port(ports / "vendor", self.vendor)
        _wait(f"{self.market_url}/healthz", self.market)
        _wait(f"{self.vendor_url}/healthz", self.vendor)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in (self.market, self.vendor):
            process.send_signal(signal.SIGTERM)
        for process in (self.market, self.vendor):
            try:
                process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._ports.cleanup()

    @property
    def market_url(self) -> str:
        return f"http://127.0.0.1:{self.market_port}"

    @property
    def vendor_url(self) -> str:
        return f"http://127.0.0.1:{self.vendor_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.market_url}/public/v1"

    def products(self) -> list[str]:
        """Product ids of the pending cancels (from the first pages; the generator spreads them)."""
        found: set[str] = set()
        reply = requests.get(
            f"{self.endpoint}/requests?eq(type,cancel)&eq(status,pending)&limit=1000",
            headers={"Authorization": DEFAULT_API_KEY},
            timeout=60,
        )
        for request in reply.json():
            found.add(request["asset"]["product"]["id"])
        return sorted(found)

    def pending(self) -> int:
        reply = requests.get(
            f"{self.endpoint}/requests?eq(type,cancel)&eq(status,pending)&limit=0",
            headers={"Authorization": DEFAULT_API_KEY},
            timeout=60,
        )
        return int(reply.headers["Content-Range"].rsplit("/", 1)[1])

    def config_data(
        self, journal_url: str, concurrency: int, notes: bool = False
    ) -> dict[str, Any]:
        return {
            "connect": {
                "endpoint": self.endpoint,
                "retry": {"backoff_base": 0.05, "backoff_max": 1.0},
            },
            "journal": {"url": journal_url},
            "processing": {
                "concurrency": concurrency,
                "notes": notes,
                "once_max_wait": 30,
                "retry_base": 0.2,
                "retry_max": 2,
            },
            "adapters": {
                "vendor": {
                    "type": "http",
                    "options": {
                        "base_url": self.vendor_url,
                        "idempotency": "key",
                        "status": True,
                        "outcomes": MOCK_VENDOR_OUTCOMES,
                        "auth": {"type": "bearer", "env": "BENCH_VENDOR_TOKEN"},
                    },
                }
            },
            "defaults": {"adapter": "vendor", "lookup_template": True},
            "products": {pid: {} for pid in self.products()},
            "log": {"level": "warning"},
        }

    def traffic(self, reset: bool = False) -> dict[str, int]:
        """The calls each mock handled since the last reset, by shape
        (:mod:`cancel_sandbox.traffic`), prefixed ``connect`` or ``vendor``; ``reset`` clears them
        after reading."""
        counts: dict[str, int] = {}
        for side, url in (("connect", self.market_url), ("vendor", self.vendor_url)):
            method = requests.delete if reset else requests.get
            reply = method(f"{url}{TRAFFIC_PATH}", timeout=60)
            reply.raise_for_status()
            counts.update({f"{side} {k}": v for k, v in reply.json()["calls"].items()})
        return counts

    @staticmethod
    def environ() -> dict[str, str]:
        return {"CONNECT_API_KEY": DEFAULT_API_KEY, "BENCH_VENDOR_TOKEN": VENDOR_TOKEN}
