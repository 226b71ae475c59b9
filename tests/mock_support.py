"""What the mock marketplace's test files share: a started marketplace and an HTTP session on it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from processor.mock.marketplace import DEFAULT_API_KEY, MarketplaceSettings, MockClock, create_app
from processor.mock.marketplace.records import Request
from processor.mock.serve import ServerThread

START = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
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


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Start marketplaces (each on its own free port) that stop when the test ends."""
    servers: list[ServerThread] = []

    def starter(**settings: Any) -> Running:
        settings.setdefault("clock", MockClock(START))
        app = create_app(MarketplaceSettings(**settings))
        server = ServerThread(app).start()
        servers.append(server)
        return Running(app, server)

    yield starter
    for server in servers:
        server.stop()


def fixture_payloads(path: Path) -> list[dict[str, Any]]:
    """The objects of a public fixture file (one object or an array)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]
