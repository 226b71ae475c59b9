"""Each processor configuration shipped under config/ passes ``cancel-processor check`` with no
warning, against the mock marketplace started as its own setup starts it (the README's seed file
for the example, compose.yaml's ``--generate 60`` for the compose one), on free ports. A shipped
example that warns on every start teaches operators to ignore warnings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from processor.ops.serving import free_port

from ..conftest import REPO

CLI = str(Path(sys.executable).with_name("cancel-processor"))
# The vendor-shape examples need the mock vendor in that shape (a token endpoint, a client-CA
# listener, a rate limit, asynchronous operations): tests/process/test_vendor_shapes.py starts
# it so and checks them there.
VENDOR_SHAPES = {
    "processor.oauth.yaml",
    "processor.mtls.yaml",
    "processor.rate.yaml",
    "processor.async.yaml",
}
ALL_SHIPPED = sorted(p.name for p in (REPO / "config").glob("processor.*.yaml"))
SHIPPED = [name for name in ALL_SHIPPED if name not in VENDOR_SHAPES]
# How the mock marketplace is started for each shipped config (README.md, compose.yaml).
MARKETPLACE_ARGS = {
    "processor.example.yaml": ["--seed-file", str(REPO / "config" / "seed.example.yaml")],
    "processor.compose.yaml": ["--generate", "60"],
}


def _environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOCK_", "CANCEL_PROCESSOR_", "CONNECT_"))
    }


@pytest.fixture(params=SHIPPED)
def mocks(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, int]]:
    name = request.param
    assert name in MARKETPLACE_ARGS, f"say how the mocks start for config/{name}"
    market, vendor = free_port(), free_port()
    started = [
        subprocess.Popen(
            [CLI, "mock-marketplace", "--port", str(market), *MARKETPLACE_ARGS[name]],
            env=_environ(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [CLI, "mock-vendor", "--port", str(vendor)],
            env=_environ(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        for port, process in zip((market, vendor), started, strict=True):
            for _ in range(600):  # bounded: at most about a minute
                assert process.poll() is None, f"a mock exited ({process.returncode})"
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail("a mock did not start")
        yield name, market, vendor
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_there_are_shipped_configs() -> None:
    assert "processor.example.yaml" in SHIPPED, SHIPPED
    shapes = (REPO / "tests" / "process" / "test_vendor_shapes.py").read_text(encoding="utf-8")
    assert all(f"config/{name}" in shapes for name in VENDOR_SHAPES & set(ALL_SHIPPED))


def test_check_on_a_shipped_config_prints_no_warning(
    mocks: tuple[str, int, int], tmp_path: Path
) -> None:
    name, market, vendor = mocks
    environ = {
        **_environ(),
        # the README's variables, with the mocks' free ports
        "CONNECT_ENDPOINT": f"http://127.0.0.1:{market}/public/v1",
        "CANCEL_PROCESSOR_CONNECT__ENDPOINT": f"http://127.0.0.1:{market}/public/v1",
        "CONNECT_API_KEY": "ApiKey SU-000-000-000:local-secret",
        "VENDOR_API_TOKEN": "vendor-local-token",
        "CANCEL_PROCESSOR_ADAPTERS__VENDOR__OPTIONS__BASE_URL": f"http://127.0.0.1:{vendor}",
        "CANCEL_PROCESSOR_JOURNAL__URL": f"sqlite:///{tmp_path / 'journal.db'}",
    }
    result = subprocess.run(
        [CLI, "check", "--config", str(REPO / "config" / name)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "warn" not in out.lower(), out[-3000:]
    assert "product PRD-" in out, out[-3000:]  # the remote checks ran, not only the local ones
