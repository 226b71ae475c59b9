"""A local mock of CloudBlue Connect's ``/public/v1`` API, for development, demos and tests.

Faithful for what a cancel processor calls: request lists with RQL (lib-rql's grammar), paging
with ``Content-Range``, the request workflow (approve, fail, inquire, pend, schedule, revoke,
confirm, assign), subscriptions, conversations and messages, product templates; Connect-shaped
objects and errors. Around it: an effects ledger, fault injection, a controllable clock,
deterministic generated data, optional SQLite persistence and a small web page.

Usage (tests)::

    app = create_app(MarketplaceSettings(generate=250, clock=MockClock(start)))
    with ServerThread(app) as server:
        client = ConnectClient(app.config.api_key, endpoint=server.url + "/public/v1")
        ...
        app.store.requests[request_id].status      # in-process access for assertions

Limits (on purpose): one API key; only ``cancel`` requests can be created; no products, listings
or billing APIs beyond what is listed; a positive ``select()`` changes nothing (Connect uses it to
add hidden fields, and this mock hides none). State lives in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Mount

from cancel_sandbox.faults import FaultMiddleware, FaultSettings
from cancel_sandbox.marketplace.admin import admin_routes
from cancel_sandbox.marketplace.app import (
    API_PREFIX,
    ApiKeyGate,
    error_response,
    json_response,
    public_routes,
)
from cancel_sandbox.marketplace.clock import MockClock, utc_now
from cancel_sandbox.marketplace.errors import ApiError
from cancel_sandbox.marketplace.generate import approve_template, ensure_catalog, generate
from cancel_sandbox.marketplace.imports import import_file
from cancel_sandbox.marketplace.objects import key_identifier
from cancel_sandbox.marketplace.persist import SqliteState
from cancel_sandbox.marketplace.rql import RQLError
from cancel_sandbox.marketplace.seed import SeedError, apply_seed, load_seed_file
from cancel_sandbox.marketplace.store import Store
from cancel_sandbox.traffic import TrafficCounter

__all__ = [
    "DEFAULT_API_KEY",
    "MarketplaceSettings",
    "MarketplaceApp",
    "MockClock",
    "SeedError",
    "Store",
    "approve_template",
    "create_app",
]

DEFAULT_API_KEY = "ApiKey SU-000-000-000:local-secret"


@dataclass
class MarketplaceSettings:
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)  # the whole header value
    seed: int = 7  # generated data is deterministic for a seed (and a start time)
    generate: int = 0  # pending cancels to generate at start (plus some context, see generate.py)
    seed_file: str | Path | None = None  # YAML/JSON, format in config/seed.example.yaml
    # Files of Connect request objects as the API returns them (object, array or JSON lines).
    import_files: tuple[str | Path, ...] = ()
    state_file: str | Path | None = None  # SQLite; None keeps everything in memory
    faults: FaultSettings = field(default_factory=FaultSettings)
    clock: Callable[[], datetime] = utc_now  # aware UTC; a MockClock makes /admin/clock work
    max_body_bytes: int = 1 << 20  # larger request bodies are answered 413
    # What the key may do beyond a vendor's key: Connect lets an external caller (a vendor's
    # processor) add messages to a request's conversation, not create conversations, so by
    # default POST /conversations answers 403. True plays a key that may create them.
    may_create_conversations: bool = False

    @property
    def key_id(self) -> str:
        """The non-secret identifier of the key (``SU-000-000-000``) the ledger records."""
        return key_identifier(self.api_key)


class MarketplaceApp(FaultMiddleware):
    """The ASGI app: FaultMiddleware around the API; ``.store``, ``.config`` and ``.state`` (with
    ``.store`` and ``.settings``) for in-process tests."""

    def __init__(self, app: Any, settings: MarketplaceSettings, store: Store) -> None:
        self.store = store  # before the faults: update() hands the store its created precision
        super().__init__(app, settings.faults)
        # ``self.settings`` is FaultMiddleware's (the current FaultSettings); ours is ``config``.
        self.config = settings
        self.state = SimpleNamespace(store=store, settings=settings)

    def update(self, settings: FaultSettings) -> None:
        super().update(settings)
        self.store.created_precision = settings.created_precision

    def _faultable(self, scope: MutableMapping[str, Any]) -> bool:
        # Health checks answer even while the API misbehaves on purpose, like /admin.
        return scope.get("path") != "/healthz" and super()._faultable(scope)


def _load(store: Store, settings: MarketplaceSettings) -> None:
    if store.restore():
        return  # a state file with content wins over seeding: restarts keep what happened
    if settings.seed_file:
        apply_seed(store, load_seed_file(settings.seed_file), seed=settings.seed)
    for path in settings.import_files:
        import_file(store, path)
    ensure_catalog(store, settings.seed)
    if settings.generate:
        generate(store, settings.generate, seed=settings.seed)


def create_app(settings: MarketplaceSettings | None = None) -> MarketplaceApp:
    """Build the marketplace (seeding or restoring its state) as an ASGI app.

    Raises :class:`SeedError` for a bad seed file and ``sqlite3.Error`` for an unusable state file.
    """
    settings = settings or MarketplaceSettings()
    state = SqliteState(settings.state_file) if settings.state_file else None
    store = Store(clock=settings.clock, seed=settings.seed, state=state)
    _load(store, settings)
    holder: dict[str, MarketplaceApp] = {}

    async def api_error(request: HttpRequest, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def rql_error(request: HttpRequest, exc: Exception) -> Response:
        return error_response(ApiError(400, "VAL_001", str(exc)))

    async def http_error(request: HttpRequest, exc: Exception) -> Response:
        # Unknown routes and methods answer in Connect's error shape, not Starlette's plain text.
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error = ApiError(405, "REQ_002", f'Method "{request.method}" not allowed.')
        elif exc.status_code == 404:
            error = ApiError(404, "REQ_001", f"Not found: {request.url.path}.")
        else:
            error = ApiError(exc.status_code, "REQ_000", str(exc.detail))
        response = error_response(error)
        response.headers.update(exc.headers or {})
        return response

    async def server_error(request: HttpRequest, exc: Exception) -> Response:
        return json_response(
            {"error_code": "SYS_001", "errors": [f"Internal error: {type(exc).__name__}."]}, 500
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()  # the state file's connection; the in-memory state stays readable

    api = Starlette(
        routes=[
            Mount(
                API_PREFIX,
                routes=public_routes(
                    store,
                    settings.key_id,
                    settings.max_body_bytes,
                    may_create_conversations=settings.may_create_conversations,
                ),
            ),
            *admin_routes(
                store, lambda: holder["app"], seed=settings.seed, max_body=settings.max_body_bytes
            ),
        ],
        exception_handlers={
            ApiError: api_error,
            RQLError: rql_error,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    # Counted before the key gate: a refused call is a call a benchmark's client made.
    app = MarketplaceApp(TrafficCounter(ApiKeyGate(api, settings.api_key)), settings, store)
    holder["app"] = app
    api.state.store = store
    return app
