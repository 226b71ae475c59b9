"""Every call a mock answered, counted by method and path shape: the call count that makes two
clients' work comparable.

A benchmark that compares the processor with a bare loop compares like for like only if both make
the same calls for the same work. Each mock wraps its app in :class:`TrafficCounter`; the counts
are read (and reset) at ``GET|DELETE /admin/traffic``, answered by the counter itself so that no
app route changes. A path's shape replaces each id segment (one holding a digit, but the version
prefix ``v1``) by ``{id}``, so ``POST /public/v1/requests/PR-1-2/approve`` counts as
``POST /public/v1/requests/{id}/approve``; the query string is not part of the shape (a listing
is a listing whatever its filter). Calls the fault middleware answers itself (an injected 503 or
429) never reach the counter: it counts the calls the server handled.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from typing import Any

from starlette.types import Receive, Scope, Send

__all__ = ["TRAFFIC_PATH", "TrafficCounter", "shape"]

TRAFFIC_PATH = "/admin/traffic"
_VERSION = re.compile(r"v\d+")


def shape(method: str, path: str) -> str:
    """``METHOD /path/{id}/...``: the path with each id segment replaced."""
    segments = [
        "{id}" if any(c.isdigit() for c in s) and not _VERSION.fullmatch(s) else s
        for s in path.split("/")
    ]
    return f"{method.upper()} {'/'.join(segments)}"


class TrafficCounter:
    """ASGI middleware: counts each non-admin HTTP call by :func:`shape`."""

    def __init__(self, app: Any) -> None:  # any ASGI callable (the mocks' gates are typed loosely)
        self.app = app
        self._lock = threading.Lock()  # the mocks may run their app in several threads
        self._counts: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if path == TRAFFIC_PATH and method in ("GET", "DELETE"):
            counts = self.counts()
            if method == "DELETE":
                self.reset()
            await _json(send, {"calls": counts, "total": sum(counts.values())})
            return
        if not path.startswith("/admin") and path not in ("/healthz", "/"):
            with self._lock:
                self._counts[shape(method, path)] += 1
        await self.app(scope, receive, send)


async def _json(send: Send, body: object) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
