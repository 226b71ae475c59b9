"""Routes outside the Connect API: admin endpoints, health, and the web page's actions.

None of them needs the API key and none is ever faulted (FaultMiddleware exempts ``/admin``,
``/ui`` and ``/``; the app exempts ``/healthz`` as well), so a test can always read the ledger and
change the faults while the API misbehaves on purpose.

- ``GET /admin/ledger?since=<seq>&limit=<n>&id=<object id>`` → ``{"entries": [...], "last_seq": n}``
- ``GET /admin/stats`` → counts by status, fault counters
- ``GET /admin/faults``, ``PUT /admin/faults`` (a whole FaultSettings mapping; missing keys reset)
- ``POST /admin/clock`` ``{"advance": seconds}`` or ``{"set": iso}`` (409 unless the clock is a
  MockClock)
- ``POST /admin/seed`` ``{"generate": n}`` → ``{"created": [ids], "count": n}``
- ``POST /admin/requests``: Connect request objects as the API returns them (one object, a JSON
  array or JSON lines) → ``{"created": [ids], "count": n}`` (201); 400 naming the payload and key
- ``POST /admin/products/{id}/templates``: template objects, kept verbatim → ``{"created": [ids]}``
- ``GET /healthz``; ``GET /`` (the page); ``POST /ui/subscriptions/{id}/cancel`` (form)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cancel_sandbox.faults import FaultMiddleware, FaultSettings
from cancel_sandbox.marketplace import actions
from cancel_sandbox.marketplace.app import json_response, read_body, read_json
from cancel_sandbox.marketplace.checks import SeedError
from cancel_sandbox.marketplace.clock import MockClock
from cancel_sandbox.marketplace.errors import ApiError
from cancel_sandbox.marketplace.generate import generate
from cancel_sandbox.marketplace.imports import import_requests, import_templates
from cancel_sandbox.marketplace.objects import iso, parse_time
from cancel_sandbox.marketplace.page import render_page
from cancel_sandbox.marketplace.payloads import parse_payloads
from cancel_sandbox.marketplace.store import ADMIN, UI, Store

__all__ = ["admin_routes", "MAX_GENERATE"]

MAX_GENERATE = 200_000
MAX_LEDGER_PAGE = 10_000


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _int(params: Any, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not str(raw).isdigit():
        raise ValueError(f"{name} must be a non-negative integer")
    return int(raw)


def admin_routes(
    store: Store, faults: Callable[[], FaultMiddleware], *, seed: int, max_body: int
) -> list[Route]:
    async def healthz(request: HttpRequest) -> Response:
        return json_response({"status": "ok", "requests": len(store.requests)})

    async def ledger(request: HttpRequest) -> Response:
        try:
            since = _int(request.query_params, "since", 0)
            limit = min(_int(request.query_params, "limit", 1000), MAX_LEDGER_PAGE)
        except ValueError as exc:
            return _error(400, str(exc))
        with store.lock:
            entries = store.ledger.since(since, limit, request.query_params.get("id") or None)
            last = store.ledger.last_seq
        return json_response({"entries": [e.as_dict() for e in entries], "last_seq": last})

    async def stats(request: HttpRequest) -> Response:
        middleware = faults()
        counters = middleware.stats
        return json_response(
            {
                **store.stats(),
                "faults": {
                    "errors": counters.errors,
                    "throttles": counters.throttles,
                    "drops": counters.drops,
                    "delayed": counters.delayed,
                },
            }
        )

    async def get_faults(request: HttpRequest) -> Response:
        return json_response(faults().settings.as_dict())

    async def put_faults(request: HttpRequest) -> Response:
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            return _error(400, "a JSON object of fault settings is required")
        try:
            settings = FaultSettings.from_mapping(body)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        faults().update(settings)
        store.record(
            ADMIN,
            "marketplace",
            "faults",
            "updated",
            detail=", ".join(f"{k}={v}" for k, v in sorted(body.items())),
        )
        return json_response(settings.as_dict())

    async def clock(request: HttpRequest) -> Response:
        body = await read_json(request, max_body) or {}
        if not isinstance(store.clock, MockClock):
            return _error(409, "the marketplace runs on the real clock; start it with a MockClock")
        if isinstance(body.get("advance"), (int, float)) and not isinstance(
            body.get("advance"), bool
        ):
            store.clock.advance(float(body["advance"]))
        elif body.get("set"):
            moment = parse_time(body["set"])
            if moment is None:
                return _error(400, "set: an ISO 8601 date and time is required")
            store.clock.set(moment)
        else:
            return _error(400, 'give {"advance": seconds} or {"set": "<ISO 8601>"}')
        store.tick()
        now = iso(store.now())
        store.record(ADMIN, "marketplace", "clock", "updated", after=now)
        return json_response({"now": now})

    async def more(request: HttpRequest) -> Response:
        body = await read_json(request, max_body) or {}
        count = body.get("generate")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_GENERATE:
            return _error(400, f"generate: an integer between 0 and {MAX_GENERATE} is required")
        created = generate(store, count, seed=seed)
        return json_response({"created": created, "count": len(created)}, 201)

    async def import_payloads(request: HttpRequest) -> Response:
        try:
            raw = await read_body(request, max_body)
            payloads = parse_payloads(raw.decode("utf-8", "replace"))
            created = import_requests(store, payloads, actor=ADMIN)
        except ApiError as exc:
            return _error(exc.status, "; ".join(exc.messages))
        except SeedError as exc:
            return _error(400, str(exc))
        return json_response({"created": created, "count": len(created)}, 201)

    async def import_product_templates(request: HttpRequest) -> Response:
        try:
            raw = await read_body(request, max_body)
            payloads = parse_payloads(raw.decode("utf-8", "replace"))
            created = import_templates(store, request.path_params["id"], payloads)
        except ApiError as exc:
            return _error(exc.status, "; ".join(exc.messages))
        except SeedError as exc:
            return _error(400, str(exc))
        return json_response({"created": created, "count": len(created)}, 201)

    async def page(request: HttpRequest) -> Response:
        return HTMLResponse(render_page(store, dict(request.query_params)))

    async def ui_cancel(request: HttpRequest) -> Response:
        try:
            raw = await read_body(request, max_body)
        except ApiError as exc:
            return _error(exc.status, "; ".join(exc.messages))
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        params = [
            {"id": name, "value": form[name]}
            for name in ("cancellation_reason", "cancellation_comment")
            if form.get(name)
        ]
        body = {"type": "cancel", "asset": {"id": request.path_params["id"], "params": params}}
        try:
            created = actions.create_cancel(store, body, UI)
        except ApiError as exc:
            return RedirectResponse("/?" + urlencode({"error": "; ".join(exc.messages)}), 303)
        return RedirectResponse("/?" + urlencode({"created": created.id}), 303)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/admin/ledger", ledger, methods=["GET"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/admin/faults", get_faults, methods=["GET"]),
        Route("/admin/faults", put_faults, methods=["PUT"]),
        Route("/admin/clock", clock, methods=["POST"]),
        Route("/admin/seed", more, methods=["POST"]),
        Route("/admin/requests", import_payloads, methods=["POST"]),
        Route("/admin/products/{id}/templates", import_product_templates, methods=["POST"]),
        Route("/", page, methods=["GET"]),
        Route("/ui/subscriptions/{id}/cancel", ui_cancel, methods=["POST"]),
    ]
