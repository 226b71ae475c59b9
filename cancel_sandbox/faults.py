"""Fault injection for the local servers: latency, 5xx, 429 with Retry-After, apply-then-drop,
and (the marketplace only) a server whose ``created`` precision differs between what it serves and
what it filters and orders by (``created_precision``, see :data:`CREATED_PRECISIONS`).

A pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request and the mock
marketplace must stay far faster than anything it measures). Paths under ``/admin`` and the web
page are never faulted, so tests can always read ledgers and change the faults at run time.

"Apply, then drop" runs the request to completion (the state change happens) and then breaks the
connection before the client has a whole response: the client sees a connection error and cannot
know whether its call acted. That is the ambiguous case the processor's journal must survive.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["FaultSettings", "FaultMiddleware", "FaultStats", "FaultDrop", "CREATED_PRECISIONS"]

# How the marketplace treats a request's ``created`` (the vendor mock ignores it):
CREATED_PRECISIONS = {
    # filters and orders at the precision it serves (what it was given, fractions included)
    "exact": "filter and order created at the precision served",
    # serves the stored fractions, but filters and orders at whole seconds (a column compared
    # at second precision, values served from another store)
    "compare_seconds": "serve fractional created, filter and order at whole seconds",
    # stores, filters and orders the fractions, but serves whole seconds (a serializer that
    # truncates)
    "serve_seconds": "filter and order fractional created, serve whole seconds",
    # coarser than the processor's keyset assumes: its final count must catch what is missed
    "compare_minutes": "serve fractional created, filter and order at whole minutes",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FaultDrop(Exception):
    """Raised inside the server to abort the connection mid-response (apply-then-drop)."""


@dataclass
class FaultSettings:
    latency_ms: float = 0.0  # added to every faultable request
    latency_jitter_ms: float = 0.0  # uniform extra 0..jitter
    error_rate: float = 0.0  # share answered 503 before the request is applied
    throttle_rate: float = (
        0.0  # share answered 429 (with Retry-After) before the request is applied
    )
    retry_after: float = 1.0  # seconds, sent in Retry-After
    drop_rate: float = 0.0  # share applied, then the connection dropped
    methods: str = "GET,POST,PUT,DELETE"  # which methods may be faulted (latency applies to all)
    path_pattern: str = ""  # regex; only matching paths are faulted (empty: all)
    seed: int | None = None
    created_precision: str = "exact"  # one of CREATED_PRECISIONS (the marketplace only)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> FaultSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        settings = cls(**data)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("error_rate", "throttle_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.retry_after < 0:
            raise ValueError("latencies and retry_after must not be negative")
        re.compile(self.path_pattern)
        if self.created_precision not in CREATED_PRECISIONS:
            raise ValueError(
                f"created_precision must be one of {', '.join(CREATED_PRECISIONS)}, "
                f"got {self.created_precision!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultStats:
    errors: int = 0
    throttles: int = 0
    drops: int = 0
    delayed: int = 0


class FaultMiddleware:
    """Wraps an ASGI app. ``settings`` may be replaced at run time (``update``)."""

    exempt_prefixes = ("/admin", "/ui", "/static", "/favicon.ico")

    def __init__(self, app: ASGIApp, settings: FaultSettings | None = None) -> None:
        self.app = app
        self.stats = FaultStats()
        self.update(settings or FaultSettings())

    def update(self, settings: FaultSettings) -> None:
        settings.validate()
        self.settings = settings
        self._random = random.Random(settings.seed)
        self._pattern = re.compile(settings.path_pattern) if settings.path_pattern else None
        self._methods = {m.strip().upper() for m in settings.methods.split(",") if m.strip()}

    def _faultable(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path == "/" or path.startswith(self.exempt_prefixes):
            return False
        return self._pattern is None or bool(self._pattern.search(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._faultable(scope):
            await self.app(scope, receive, send)
            return
        s = self.settings
        if s.latency_ms or s.latency_jitter_ms:
            self.stats.delayed += 1
            delay = s.latency_ms + self._random.uniform(0.0, s.latency_jitter_ms)
            await asyncio.sleep(delay / 1000.0)
        if scope.get("method", "GET").upper() not in self._methods:
            await self.app(scope, receive, send)
            return
        roll = self._random.random()
        if roll < s.error_rate:
            self.stats.errors += 1
            await _json(
                send, 503, b'{"error_code":"SYS_001","errors":["Service unavailable (injected)."]}'
            )
            return
        roll -= s.error_rate
        if roll < s.throttle_rate:
            self.stats.throttles += 1
            await _json(
                send,
                429,
                b'{"error_code":"SYS_002","errors":["Too many requests (injected)."]}',
                [(b"retry-after", str(_retry_after(s.retry_after)).encode())],
            )
            return
        roll -= s.throttle_rate
        if roll < s.drop_rate:
            self.stats.drops += 1
            await self.app(scope, receive, _dropping(send))
            return
        await self.app(scope, receive, send)


def _retry_after(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def _dropping(send: Send) -> Send:
    """A ``send`` that lets the response start, then aborts: the server closes the connection with
    the body incomplete, which the client reports as a connection error."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", b"1048576"))
            await send({**message, "headers": headers})
            return
        if message["type"] == "http.response.body":
            raise FaultDrop("connection dropped after the change was applied (injected)")
        await send(message)

    return wrapped


async def _json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})
