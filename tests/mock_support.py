"""What the mock marketplace's test files share: started marketplaces and HTTP sessions on them.

A test module imports the fixtures it uses by name (``start`` needs ``clock`` imported too:
conftest's ``clock`` is another kind of clock).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cancel_sandbox.marketplace import (
    DEFAULT_API_KEY,
    MarketplaceSettings,
    MockClock,
    approve_template,
    create_app,
)
from cancel_sandbox.marketplace.records import Request
from processor.ops.serving import ServerThread

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET = DEFAULT_API_KEY.split(":", 1)[1]
KEY_ID = "SU-000-000-000"


class Running:
    """A started marketplace and a keep-alive session that sends the API key."""

    def __init__(self, app: Any, server: ServerThread) -> None:
        self.app, self.server, self.store = app, server, app.store
        self.http = requests.Session()
        self.http.headers["Authorization"] = app.config.api_key

    @property
    def api(self) -> str:
        return f"{self.server.url}/public/v1"

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.http.request(method, f"{self.api}{path}", json=body, timeout=10, **kwargs)

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)

    def act(self, request_id: str, action: str, body: Any = None) -> requests.Response:
        return self.call("POST", f"/requests/{request_id}/{action}", body)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.server.url + path, timeout=10, **kwargs)

    def ids(self, rql: str) -> list[str]:
        """Every id a query returns, through pages of 1000."""
        out: list[str] = []
        while True:
            response = self.get(f"/requests?{rql}&limit=1000&offset={len(out)}")
            assert response.status_code == 200, response.text
            page = response.json()
            out += [doc["id"] for doc in page]
            if len(page) < 1000:
                return out

    def ledger(self, since: int = 0, object_id: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since, "limit": 10000}
        if object_id:
            params["id"] = object_id
        return self.admin("GET", "/admin/ledger", params=params).json()["entries"]

    def pending(self) -> Iterator[Request]:
        """Fresh pending cancels, oldest first (each test step takes its own)."""
        return iter(
            sorted(
                (
                    r
                    for r in self.store.requests.values()
                    if r.type == "cancel" and r.status == "pending"
                ),
                key=lambda r: (r.created, r.id),
            )
        )


def template_of(request: Request) -> str:
    return approve_template(request.asset.product)


@pytest.fixture
def clock() -> MockClock:
    """The marketplace's clock, frozen at START until a test moves it."""
    return MockClock(START)


@pytest.fixture
def start(clock: MockClock) -> Iterator[Callable[..., Running]]:
    """Start marketplaces (each on its own free port) that stop when the test ends."""
    servers: list[ServerThread] = []

    def starter(**settings: Any) -> Running:
        settings.setdefault("clock", clock)
        app = create_app(MarketplaceSettings(**settings))
        server = ServerThread(app).start()
        servers.append(server)
        return Running(app, server)

    yield starter
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def catalog() -> Iterator[Running]:
    """A read-only marketplace shared by the query tests (nothing may change it)."""
    app = create_app(MarketplaceSettings(generate=300, seed=3, clock=MockClock(START)))
    with ServerThread(app) as server:
        yield Running(app, server)


@pytest.fixture(scope="module")
def workflow() -> Iterator[Running]:
    """A marketplace whose pending cancels the status-rule tests use up one by one."""
    app = create_app(MarketplaceSettings(generate=160, seed=5, clock=MockClock(START)))
    with ServerThread(app) as server:
        running = Running(app, server)
        running.queue = running.pending()  # type: ignore[attr-defined]
        yield running


def fixture_payloads(path: Path) -> list[dict[str, Any]]:
    """The objects of a public fixture file (one object or an array)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


def sandbox_api(sandbox: Any, method: str, path: str, body: Any = None) -> Any:
    """Call the local sandbox's marketplace API as another party would (its public endpoint and
    the key it hands a processor), for what ``Sandbox`` has no method for."""
    response = requests.request(
        method,
        f"{sandbox.endpoint}/{path}",
        json=body,
        headers={"Authorization": sandbox.environ()["CONNECT_API_KEY"]},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()
