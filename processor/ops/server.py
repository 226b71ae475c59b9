"""The ops HTTP server: ``/healthz``, ``/readyz``, ``/metrics``, the status page and its Retry
button.

Routes (everything but the probes behind :class:`~processor.ops.guard.Guard`'s token when one is
set):

=====================================  ==========================================================
``GET /healthz``                       200 ``{"status": "ok"}`` while the process serves requests
``GET /readyz``                        the readiness report; 200 when ready, 503 otherwise
``GET /metrics``                       Prometheus text; the ``cancel_parked`` gauge is refreshed
                                       from the journal on every scrape
``GET /``                              the status page (``?state=``, ``?product=``, ``?q=``)
``GET /requests/{id}``                 one request: its record and its timeline
``POST /requests/{id}/retry``          back to ``new`` (parked or waiting for a person only), then
                                       a 303 to the form's ``next`` path; cross-origin posts are 403
=====================================  ==========================================================

Exposure: a server bound to anything but loopback refuses to start without a token
(:func:`create_ops_app` raises :class:`ValueError`; :func:`build_ops_server`
:class:`~processor.config.schema.ConfigError`). Journal calls are blocking and run in Starlette's
thread pool; uvicorn admits at most ``limit_concurrency`` connections at once (503 beyond), so a
flood of page loads cannot exhaust the journal's connections. An unreachable journal makes the page
answer 503 with the (masked) reason; ``/healthz`` keeps answering, ``/readyz`` says "journal":
false.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from processor.config.schema import Config, ConfigError
from processor.engine.guard import latched
from processor.journal.base import Journal, JournalError, State
from processor.observe import Metrics, get_logger, mask, register_secret
from processor.ops import page
from processor.ops.actions import ActionRefused, retry_request
from processor.ops.bounded_h11 import HEAD_TIMEOUT, bounded_h11
from processor.ops.guard import MAX_HEAD_BYTES, Guard, is_loopback_host
from processor.ops.listing import Filters, newest, why_waiting
from processor.ops.readiness import Readiness, is_ready
from processor.ops.serving import ServerThread

__all__ = ["create_ops_app", "OpsServer", "build_ops_server", "MIN_TOKEN_LENGTH", "ACTOR"]

MIN_TOKEN_LENGTH = 16
ACTOR = "status-page"
log = get_logger(component="ops")


def _html(text: str, nonce: str, status: int = 200) -> HTMLResponse:
    policy = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src "
        "'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return HTMLResponse(
        text,
        status_code=status,
        headers={
            "content-security-policy": policy,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "same-origin",
            "cache-control": "no-store",
        },
    )


def _message(status: int, title: str, text: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(12)
    return _html(page.render_message(title, text, nonce=nonce), nonce, status)


def _same_origin(request: Request) -> bool:
    """A browser names where a form was posted from; refuse any other site. Absent headers (curl,
    scripts holding the token) are let through: the token or loopback already decided who they
    are."""
    host = request.headers.get("host", "")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    return referer is None or urlsplit(referer).netloc == host


def _local_path(value: str | None) -> str:
    """``value`` if it is a path on this server, else ``/`` (a redirect must not leave the site)."""
    if (
        value
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and "\n" not in value
    ):
        return value
    return "/"


def _with_notice(path: str, request_id: str) -> str:
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "retried"] + [
        ("retried", request_id)
    ]
    return f"{parts.path}?{urlencode(query)}"


def create_ops_app(
    *,
    journal: Journal,
    metrics: Metrics,
    readiness: Readiness,
    token: str | None,
    bound_to_loopback: bool,
    max_body_bytes: int = 64 * 1024,
    rows: int = 100,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    latches: Callable[[], Mapping[str, Mapping[str, str]]] = dict,
) -> Any:
    """The ops ASGI app. Raises ValueError when not bound to loopback without a token, or when a
    token is shorter than :data:`MIN_TOKEN_LENGTH` characters."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the status token must have at least {MIN_TOKEN_LENGTH} characters")
    if not bound_to_loopback and not token:
        raise ValueError("the ops server is not bound to loopback: a token is required")
    register_secret(token)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> Response:
        try:
            report = readiness()
        except Exception as exc:  # noqa: BLE001 - a broken check is "not ready", not a 500
            return JSONResponse({"error": mask(f"{type(exc).__name__}: {exc}")}, status_code=503)
        return JSONResponse(report, status_code=200 if is_ready(report) else 503)

    def metrics_text(request: Request) -> Response:
        try:
            counts = journal.counts()
            metrics.parked.set(counts.get(State.PARKED, 0))
            metrics.held_now.set(counts.get(State.HELD, 0))
        except JournalError as exc:  # the scrape still answers: the other series are in memory
            log.warning("metrics_journal_unavailable", error=mask(str(exc)))
        return Response(
            generate_latest(metrics.registry), headers={"content-type": CONTENT_TYPE_LATEST}
        )

    def index(request: Request) -> Response:
        try:
            filters = Filters.from_query(request.query_params)
        except ValueError as exc:
            return _message(400, "Bad filter", str(exc))
        attention = {
            state: [
                (r, why_waiting(journal, r))
                for r in newest(journal, Filters(state=state), limit=rows).records
            ]
            for state in (State.PARKED, State.WAITING_HUMAN, State.HELD)
        }
        try:
            latched_now = latches()
        except OSError as exc:  # an unreadable latch file is said, never taken for "not latched"
            latched_now = {"?": {"reason": f"latches unknown: {exc}"}}
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "retried"]
        retried = request.query_params.get("retried")
        view = page.IndexView(
            counts=journal.counts(),
            filters=filters,
            recent=newest(journal, filters, limit=rows),
            parked=attention[State.PARKED],
            waiting=attention[State.WAITING_HUMAN],
            journal_url=journal.url,
            generated_at=clock(),
            back="/" + (f"?{urlencode(kept)}" if kept else ""),
            notice=f"{retried} was sent back to new: the processor takes it up on its next pass"
            if retried
            else None,
            rates=page.rate_views(metrics, clock().timestamp()),
            held=attention[State.HELD],
            latched=latched_now,
        )
        nonce = secrets.token_urlsafe(12)
        return _html(page.render_index(view, nonce=nonce), nonce)

    def request_page(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        record = journal.get(request_id)
        if record is None:
            return _message(404, "Not in the journal", f"{request_id} is not in the journal.")
        retried = request.query_params.get("retried") == request_id
        nonce = secrets.token_urlsafe(12)
        html = page.render_request(
            record,
            journal.transitions(request_id),
            nonce=nonce,
            notice="sent back to new: the processor takes it up on its next pass"
            if retried
            else None,
        )
        return _html(html, nonce)

    async def retry(request: Request) -> Response:
        if not _same_origin(request):
            return _message(
                403, "Refused", "This form may only be posted from the status page itself."
            )
        request_id = request.path_params["request_id"]
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        try:
            done = await run_in_threadpool(retry_request, journal, request_id, actor=ACTOR)
        except ActionRefused as refused:
            return _message(409, "Not retried", str(refused))
        log.info("operator_retry", request_id=request_id, from_state=done.before.value, actor=ACTOR)
        return RedirectResponse(
            _with_notice(_local_path(form.get("next")), request_id), status_code=303
        )

    def journal_down(request: Request, exc: Exception) -> Response:
        log.warning("ops_journal_unavailable", path=request.url.path, error=mask(str(exc)))
        return _message(503, "Journal unavailable", str(exc))

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_text, methods=["GET", "HEAD"]),
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/requests/{request_id}", request_page, methods=["GET", "HEAD"]),
            Route("/requests/{request_id}/retry", retry, methods=["POST"]),
        ],
        exception_handlers={JournalError: journal_down},
    )
    return Guard(app, token=token, loopback=bound_to_loopback, max_body_bytes=max_body_bytes)


class OpsServer:
    """The ops app served by uvicorn in a daemon thread (the daemon's main thread keeps its
    signals).

    HTTP/1.1 through h11 with each request head bounded (:mod:`processor.ops.bounded_h11`): it
    must arrive within ``head_timeout`` seconds, and an incomplete head over the guard's 16 KiB
    (plus 4 KiB for separators the guard does not count) is refused at once; at most
    ``limit_concurrency`` connections at once.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        limit_concurrency: int = 32,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        protocol = bounded_h11(head_timeout=head_timeout, max_head_bytes=MAX_HEAD_BYTES + 4096)
        self._thread = ServerThread(
            app, host, port or None, http=protocol, limit_concurrency=limit_concurrency
        )

    @property
    def url(self) -> str:
        return self._thread.url

    @property
    def port(self) -> int:
        return self._thread.port

    def start(self, timeout: float = 10.0) -> OpsServer:
        """Raises RuntimeError when the port cannot be bound (in use, not permitted)."""
        self._thread.start(timeout)
        log.info("ops_server_started", url=self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_ops_server(
    config: Config,
    *,
    journal: Journal,
    metrics: Metrics,
    readiness: Readiness,
    environ: Mapping[str, str] | None = None,
) -> OpsServer | None:
    """The configured ops server, not started; None when ``http.enabled`` is false. The token comes
    from the environment variable ``http.token_env`` names. Raises ConfigError for a host other than
    loopback without a token, or a token too short."""
    http = config.http
    if not http.enabled:
        return None
    environ = os.environ if environ is None else environ
    token = environ.get(http.token_env) or None
    loopback = is_loopback_host(http.host)
    if token is None and not loopback:
        raise ConfigError(
            config.source,
            "http.host",
            (
                f"{http.host} is not a loopback address: set {http.token_env} to a token of at "
                f"least {MIN_TOKEN_LENGTH} characters, or bind to 127.0.0.1"
            ),
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            config.source,
            "http.token_env",
            f"{http.token_env} holds a token shorter than {MIN_TOKEN_LENGTH} characters",
        )
    app = create_ops_app(
        journal=journal,
        metrics=metrics,
        readiness=readiness,
        token=token,
        bound_to_loopback=loopback,
        latches=lambda: latched(config),
    )
    return OpsServer(app, http.host, http.port)
