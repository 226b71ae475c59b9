"""Shared by the Connect gateway's tests: a fake time whose ``sleep`` records and advances the clock
(so no test waits), ``responses`` as Connect, a gateway factory, and small request helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses

from processor.marketplace import ConnectGateway, GatewaySettings

ENDPOINT = "https://connect.example/public/v1"
SECRET = "Zx9-very-secret-part-0123456789"
API_KEY = f"ApiKey SU-123-456-789:{SECRET}"
T0 = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)


class FakeTime:
    """Monotonic and wall clocks that only move when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = T0.timestamp()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall += seconds

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall


@pytest.fixture(name="fake_time")
def fake_time_fixture() -> FakeTime:
    return FakeTime()


@pytest.fixture(name="http")
def http_fixture() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture(name="retries")
def retries_fixture() -> list[tuple[str, str]]:
    return []


@pytest.fixture(name="gateway")
def gateway_fixture(fake_time: FakeTime, retries: list[tuple[str, str]]) -> Any:
    def build(**overrides: Any) -> ConnectGateway:
        settings = GatewaySettings(
            endpoint=ENDPOINT, api_key=overrides.pop("api_key", API_KEY), **overrides
        )
        return ConnectGateway(
            settings,
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=fake_time.wall_clock,
            on_retry=lambda cause, operation: retries.append((cause, operation)),
        )

    return build


def url(path: str) -> str:
    return f"{ENDPOINT}/{path}"


def a_request(request_id: str = "PR-1", status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "type": "cancel",
        "status": status,
        "created": T0.isoformat(),
        **extra,
    }


def methods(http: Any) -> list[str]:
    return [
        f"{c.request.method} {urlsplit(c.request.url).path.rsplit('/v1/', 1)[1]}"
        for c in http.calls
    ]


def body(call: Any) -> Any:
    return json.loads(call.request.body) if call.request.body else None
