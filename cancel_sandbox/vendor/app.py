"""The mock vendor's HTTP API (Starlette), wrapped in the fault middleware.

Vendor API (``Authorization: Bearer <token>`` on every call, else 401 ``unauthorized``):

- ``POST /v1/subscriptions/{id}/terminate|suspend|purge``, optional JSON body
  ``{"request_id", "reason_code", "comment"}`` (strings, else 400 ``validation_failed``) → 200
  ``{"id", "status", "<action>ed_at", ...}``; 403 ``forbidden`` with the read-only token;
  404 ``not_found``; 422 ``refused`` (terminate); 409 ``not_terminated`` (purge before terminate),
  ``already_terminated`` (suspend after terminate, or any repeat in ``natural`` mode),
  ``already_suspended`` / ``already_purged`` (repeats in ``natural`` mode).
- ``GET /v1/subscriptions/{id}`` → 200 ``{"id", "status", ...}``; 404 ``not_found``. In ``none``
  mode the vendor has no status endpoint: **405** ``not_supported`` (405 rather than 404 so that a
  client cannot mistake it for "no such subscription").

With OAuth2 on (``oauth_client_id``), ``POST /oauth/token`` issues short-lived tokens and the API
takes only those (401 ``invalid_token`` to an expired or unknown one); with a rate limit on
(``rate_calls``), a call past it is answered 429 with ``Retry-After`` before anything else is
looked at. Both are :mod:`.gates`'; both count in the ledger's summary, as does a call refused
either way in its calls. Served over TLS with a client CA (``mock-vendor --client-ca``), the
listener takes only connections whose client certificate that CA signed.

In ``key`` mode, ``Idempotency-Key`` on the POSTs is honoured (see :mod:`.idempotency`); replays
carry ``Idempotent-Replayed: true``. Other modes ignore the header but still log it in the ledger.
A terminate that repeats on a purged subscription (modes other than ``natural``) is recorded as a
duplicate effect and leaves it purged; the answer shows ``"status": "purged"``.

Admin (no token, never faulted): ``GET /healthz``; ``GET|PUT /admin/mode`` ``{"mode"}``;
``GET|PUT /admin/faults`` (PUT replaces all :class:`FaultSettings`; omitted fields take defaults);
``GET /admin/subscriptions``, ``GET|PUT /admin/subscriptions/{id}`` ``{"status", "refuse"?}``;
``GET /admin/ledger`` (``?summary=1`` for the summary alone); ``POST /admin/reset`` (subscriptions,
keys, ledger, pending late calls and fault counters; not the mode or fault settings);
``GET|PUT /admin/late`` ``{"delay", "jitter", "answer"}`` and the calls received but not applied
yet, ``POST /admin/apply`` applies them all now (see :mod:`.late`); ``GET|PUT /admin/operations``
``{"on", "delay", "jitter", "fail_rate", "fail_pattern", "seed"}`` and the operations accepted,
``POST /admin/complete`` completes every pending one now (see :mod:`.operations`).

Asynchronous mode (``operations.on``): terminate, suspend and purge answer ``202`` with
``{"operation_id", "status": "pending", ...}`` and ``Location: /operations/<id>``, and complete
later; ``GET /operations/{id}`` (token as for status reads) answers ``{"id", "status":
"pending"|"done"|"failed", ...}`` or 404 ``not_found``; each poll is a call in the ledger
(action ``poll``).

The token is compared in constant time and appears in no response, log line or repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cancel_sandbox.faults import FaultMiddleware, FaultSettings, FaultStats, Receive, Scope, Send
from cancel_sandbox.traffic import TrafficCounter
from cancel_sandbox.vendor.gates import GateCounts, RateGate, TokenIssuer
from cancel_sandbox.vendor.idempotency import MAX_KEY_LENGTH, fingerprint
from cancel_sandbox.vendor.late import LateApplier, LateSettings
from cancel_sandbox.vendor.operations import IN_FLIGHT, Operations, OperationSettings
from cancel_sandbox.vendor.persist import SqliteStore
from cancel_sandbox.vendor.settings import VendorSettings
from cancel_sandbox.vendor.state import ACTIONS, ActionResult, Mode, Status, VendorState

__all__ = ["VendorApp", "create_app"]

MAX_BODY_BYTES = 64 * 1024


class VendorApp:
    """The ASGI application; also exposes ``state``, ``mode`` and ``faults`` to in-process
    callers."""

    def __init__(self, settings: VendorSettings) -> None:
        self.mode = Mode(settings.mode)
        self._token = settings.token.encode()
        self._read_only_token = (
            settings.read_only_token.encode() if settings.read_only_token else None
        )
        self._work_s = settings.work_ms / 1000.0
        self._store = SqliteStore(settings.state_file) if settings.state_file else None
        self.state = VendorState(settings.refuse_pattern, settings.gone_pattern, self._store)
        self.late = LateApplier(self.state, self.state.keys, self._store, settings.late)
        self.operations = Operations(self.state, self._store, settings.operations)
        self.gate_counts = GateCounts()
        self.issuer: TokenIssuer | None = None
        self.rate: RateGate | None = None
        if settings.oauth_client_id is not None:
            assert settings.oauth_client_secret is not None  # VendorSettings checks it
            self.issuer = TokenIssuer(
                settings.oauth_client_id,
                settings.oauth_client_secret,
                settings.token_lifetime,
                self.gate_counts,
            )
        if settings.rate_calls is not None:
            self.rate = RateGate(settings.rate_calls, settings.rate_per, self.gate_counts)
        routes = [
            Route("/oauth/token", self.token, methods=["POST"]),
            Route("/v1/subscriptions/{sid}/{action}", self.action, methods=["POST"]),
            Route("/v1/subscriptions/{sid}", self.status, methods=["GET"]),
            Route("/operations/{op}", self.operation, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/admin/mode", self.admin_mode, methods=["GET", "PUT"]),
            Route("/admin/faults", self.admin_faults, methods=["GET", "PUT"]),
            Route("/admin/subscriptions", self.admin_subscriptions, methods=["GET"]),
            Route("/admin/subscriptions/{sid}", self.admin_subscription, methods=["GET", "PUT"]),
            Route("/admin/ledger", self.admin_ledger, methods=["GET"]),
            Route("/admin/reset", self.admin_reset, methods=["POST"]),
            Route("/admin/late", self.admin_late, methods=["GET", "PUT"]),
            Route("/admin/apply", self.admin_apply, methods=["POST"]),
            Route("/admin/operations", self.admin_operations, methods=["GET", "PUT"]),
            Route("/admin/complete", self.admin_complete, methods=["POST"]),
        ]
        starlette = Starlette(
            routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=self._lifespan
        )
        self.faults = FaultMiddleware(TrafficCounter(starlette), settings.faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.late.waiting:
            self.late.apply_due()  # due applications first, also where no lifespan task runs
        if self.operations.waiting:
            self.operations.complete_due()
        await self.faults(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self.late.run()), asyncio.create_task(self.operations.run())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- vendor API -----------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        sid, action = request.path_params["sid"], request.path_params["action"]
        if action not in ACTIONS:
            raise HTTPException(404)
        key = request.headers.get("idempotency-key")
        request_id: str | None = None

        def answer(
            status_code: int,
            body: dict[str, Any],
            replayed: bool = False,
            headers: dict[str, str] | None = None,
        ) -> Response:
            self.state.ledger.call(
                request.method,
                request.url.path,
                sid,
                action,
                key,
                status_code,
                replayed,
                request_id,
            )
            if replayed:
                headers = {**(headers or {}), "Idempotent-Replayed": "true"}
            if status_code == 202 and isinstance(body.get("operation_id"), str):
                headers = {**(headers or {}), "Location": f"/operations/{body['operation_id']}"}
            return JSONResponse(body, status_code, headers=headers)

        refused = self._gate(request)
        if refused is not None:
            return answer(*refused[:2], headers=refused[2])
        if self._read_only(request):
            return answer(
                403,
                {"error": "forbidden", "message": "this token lacks the subscriptions:write scope"},
            )
        if not self._authorized(request):
            return answer(401, {"error": "unauthorized"})
        try:
            body = await _json_body(request)
        except _BadBody as exc:
            return answer(exc.status_code, {"error": exc.error})
        problem = _invalid_field(body)
        if problem:
            return answer(400, {"error": "validation_failed", "message": problem})
        if isinstance(body.get("request_id"), str):
            request_id = body["request_id"]

        mode, keys, fp = self.mode, self.state.keys, None
        if mode is Mode.KEY and key is not None:
            if not key or len(key) > MAX_KEY_LENGTH:
                return answer(400, {"error": "invalid_idempotency_key"})
            fp = fingerprint(request.method, _path_with_query(request), body)
            record = keys.get(key)
            if record is not None:
                if record.fingerprint != fp:
                    return answer(422, {"error": "idempotency_key_reuse"})
                if record.status_code is None or record.body is None:
                    return answer(409, {"error": "idempotency_key_in_use"})
                return answer(record.status_code, record.body, replayed=True)
            keys.begin(key, fp)
        # Accepted now as an operation, completed (or failed) later (see .operations); a repeat
        # in natural mode is answered the operation in flight.
        if self.operations.on and (
            self.state.would_act(action, sid, mode)
            or (mode is Mode.NATURAL and self.operations.in_flight(sid, action) is not None)
        ):
            accepted = self.operations.accept(action, sid, mode, key, request_id).public()
            if fp is not None and key is not None:
                keys.complete(key, 202, accepted)
            return answer(202, accepted)
        # Received now, applied later, whatever the client does (see .late); a call that would
        # change nothing (a refusal, an unknown id) is answered at once, as a gateway passes on
        # a quick answer.
        if self.late.on and self.state.would_act(action, sid, mode):
            pending = self.late.receive(action, sid, mode, key, fp, request_id)
            if self.late.settings.answer == "504" or pending.done is None:
                return answer(504, {"error": "gateway_timeout"})
            await pending.done.wait()
            if pending.result is None:  # its key's answer came from a retry after a restart
                return answer(409, {"error": "idempotency_key_in_use"})
            return answer(pending.result.status_code, pending.result.body)
        try:
            result = await self._perform(action, sid, mode, key, request_id)
        except BaseException:
            if fp is not None and key is not None:
                keys.release(key)  # cancelled or crashed before answering: let a retry run
            raise
        if fp is not None and key is not None:
            keys.complete(key, result.status_code, result.body)
        return answer(result.status_code, result.body)

    async def _perform(
        self, action: str, sid: str, mode: Mode, key: str | None, request_id: str | None
    ) -> ActionResult:
        if self._work_s:
            await asyncio.sleep(self._work_s)
        return self.state.act(action, sid, mode, key, request_id)

    async def status(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        key = request.headers.get("idempotency-key")

        def answer(
            status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> Response:
            self.state.ledger.call(
                request.method, request.url.path, sid, "status", key, status_code
            )
            return JSONResponse(body, status_code, headers=headers)

        refused = self._gate(request)
        if refused is not None:
            return answer(*refused)
        if not self._authorized(request) and not self._read_only(request):
            return answer(401, {"error": "unauthorized"})
        if self.mode is Mode.NONE:
            return answer(405, {"error": "not_supported"}, {"Allow": "POST"})
        sub = self.state.lookup(sid)
        if sub is None:
            return answer(404, {"error": "not_found"})
        running = self.operations.in_flight(sid)
        if running is not None:  # a status the processor does not know: it waits
            return answer(200, {**sub.public(), "status": IN_FLIGHT[running.action]})
        return answer(200, sub.public())

    async def operation(self, request: Request) -> Response:
        """``GET /operations/{id}``: an accepted operation's state (see :mod:`.operations`)."""
        found = self.operations.get(request.path_params["op"])

        def answer(status_code: int, body: dict[str, Any]) -> Response:
            sid = found.sid if found is not None else None
            self.state.ledger.call(request.method, request.url.path, sid, "poll", None, status_code)
            return JSONResponse(body, status_code)

        refused = self._gate(request)
        if refused is not None:
            self.state.ledger.call(request.method, request.url.path, None, "poll", None, refused[0])
            return JSONResponse(refused[1], refused[0], headers=refused[2])
        if not self._authorized(request) and not self._read_only(request):
            return answer(401, {"error": "unauthorized"})
        if found is None:
            return answer(404, {"error": "not_found"})
        return answer(200, found.public())

    def _gate(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """The rate limit's 429, or the OAuth2 401 of an expired or unknown token; else None."""
        if self.rate is not None and (wait := self.rate.admit()) is not None:
            return 429, {"error": "rate_limited"}, {"Retry-After": str(wait)}
        if self.issuer is None or self._read_only(request):
            return None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        problem = (
            self.issuer.check(credentials.strip()) if scheme.lower() == "bearer" else "missing"
        )
        if problem is None:
            return None
        challenge = f'Bearer error="invalid_token", error_description="token {problem}"'
        return 401, {"error": "invalid_token"}, {"WWW-Authenticate": challenge}

    async def token(self, request: Request) -> Response:
        if self.issuer is None:
            raise HTTPException(404)
        raw = await request.body()  # a token request is a short urlencoded form (RFC 6749 4.4.2)
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, "body_too_large")
        fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        code, body, headers = self.issuer.issue(request.headers.get("authorization", ""), fields)
        return JSONResponse(body, code, headers=headers)

    def _read_only(self, request: Request) -> bool:
        if self._read_only_token is None:
            return False
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._read_only_token
        )

    def _authorized(self, request: Request) -> bool:
        if self.issuer is not None:  # _gate() checked the token already
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token
        )

    # -- admin ----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "mode": self.mode.value})

    async def admin_mode(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                body = await _json_body(request)
                self.mode = Mode(body.get("mode"))
            except _BadBody as exc:
                return _error(exc.status_code, exc.error)
            except ValueError:
                modes = ", ".join(m.value for m in Mode)
                return _error(400, "invalid_mode", f"mode must be one of {modes}")
        return JSONResponse({"mode": self.mode.value})

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                self.faults.update(FaultSettings.from_mapping(await _json_body(request)))
            except _BadBody as exc:
                return _error(exc.status_code, exc.error)
            except (TypeError, ValueError) as exc:
                return _error(400, "invalid_faults", str(exc))
        return JSONResponse(
            {"settings": self.faults.settings.as_dict(), "stats": asdict(self.faults.stats)}
        )

    async def admin_subscriptions(self, request: Request) -> Response:
        return JSONResponse({"subscriptions": [s.as_dict() for s in self.state.subscriptions()]})

    async def admin_subscription(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        if request.method == "GET":
            found = self.state.get(sid)
            return JSONResponse(found.as_dict()) if found else _error(404, "not_found")
        try:
            body = await _json_body(request)
            status = Status(body.get("status"))
        except _BadBody as exc:
            return _error(exc.status_code, exc.error)
        except ValueError:
            return _error(
                400, "invalid_status", "status must be one of " + ", ".join(s.value for s in Status)
            )
        refuse = body.get("refuse")
        if refuse is not None and not isinstance(refuse, bool):
            return _error(400, "invalid_refuse", "refuse must be true or false")
        return JSONResponse(self.state.seed(sid, status, refuse).as_dict())

    async def admin_ledger(self, request: Request) -> Response:
        extra = {
            "mode": self.mode.value,
            "faults": asdict(self.faults.stats),
            **self.gate_counts.as_dict(),
            **self.operations.counts(),
        }
        if request.query_params.get("summary") in {"1", "true", "yes"}:
            return JSONResponse({"summary": {**self.state.ledger.summary(), **extra}})
        ledger = self.state.ledger.as_dict()
        ledger["summary"].update(extra)
        return JSONResponse(ledger)

    async def admin_late(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                settings = LateSettings.from_mapping(await _json_body(request))
            except _BadBody as exc:
                return _error(exc.status_code, exc.error)
            except (TypeError, ValueError) as exc:
                return _error(400, "invalid_late", str(exc))
            self.late.settings = settings
        return JSONResponse(
            {
                "settings": asdict(self.late.settings),
                "pending": self.late.pending(),
                "applied": self.late.applied,
            }
        )

    async def admin_operations(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                settings = OperationSettings.from_mapping(await _json_body(request))
            except _BadBody as exc:
                return _error(exc.status_code, exc.error)
            except (TypeError, ValueError) as exc:
                return _error(400, "invalid_operations", str(exc))
            self.operations.settings = settings
        return JSONResponse(
            {
                "settings": asdict(self.operations.settings),
                "operations": self.operations.listed(),
                **self.operations.counts(),
            }
        )

    async def admin_complete(self, request: Request) -> Response:
        return JSONResponse({"completed": self.operations.complete_due(float("inf"))})

    async def admin_apply(self, request: Request) -> Response:
        return JSONResponse({"applied": self.late.apply_due(float("inf"))})

    async def admin_reset(self, request: Request) -> Response:
        self.late.clear()
        self.operations.clear()
        self.state.reset()
        self.faults.stats = FaultStats()
        for name in vars(self.gate_counts):
            setattr(self.gate_counts, name, 0)
        if self.issuer is not None:
            self.issuer.reset()
        return JSONResponse({"status": "reset"})


def create_app(settings: VendorSettings | None = None) -> VendorApp:
    """The mock vendor as an ASGI application (serve it with :mod:`processor.ops.serving`)."""
    return VendorApp(settings or VendorSettings())


class _BadBody(Exception):
    def __init__(self, status_code: int, error: str) -> None:
        super().__init__(error)
        self.status_code, self.error = status_code, error


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _BadBody(413, "body_too_large")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _BadBody(400, "invalid_json") from None
    if not isinstance(body, dict):
        raise _BadBody(400, "invalid_json")
    return body


def _invalid_field(body: dict[str, Any]) -> str | None:
    """The body's documented fields are strings: anything else is a client bug (400)."""
    for name in ("request_id", "reason_code", "comment"):
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    return None


def _path_with_query(request: Request) -> str:
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def _error(status_code: int, error: str, message: str | None = None) -> JSONResponse:
    body = {"error": error} if message is None else {"error": error, "message": message}
    return JSONResponse(body, status_code)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = {404: "no_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": error}, exc.status_code, headers=exc.headers)
