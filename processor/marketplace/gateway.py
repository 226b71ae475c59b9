"""The marketplace gateway: the only object that talks to Connect.

It wraps a connect-openapi-client ``ConnectClient`` (built with its own retries off, pages not
accumulated, our timeouts and User-Agent) and adds three things the client lacks:

- one retry layer (:mod:`processor.marketplace.retry`): backoff, 429 ``Retry-After``, typed errors;
- the reading of ambiguous outcomes. An action (approve, fail, schedule, confirm) whose response
  was lost (no response, timeout, 5xx) may have acted, so before trying again the gateway re-reads
  the request: already in the target status means the action went through; still in the source
  status means try again; anything else means someone else moved it (:class:`NotPending`). A 400
  refusal is read the same way, which makes approve and fail idempotent across a crash between
  "approved" and "recorded". A conversation message is not idempotent either: after an ambiguous
  failure the gateway looks for the same text before posting it again;
- keyset paging of pending requests (:mod:`processor.marketplace.paging`).

Thread safety: the client keeps one HTTP session per thread; the gateway's caches and throttle
gate are locked, so worker threads may share one gateway while another thread lists requests.
Secrets: the API key is sent only in the Authorization header; it is never logged, never part of
an error message (server texts are redacted), and hidden from ``repr`` of the settings.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import structlog
from connect.client import ConnectClient
from connect.client import fluent as connect_fluent
from connect.client import utils as connect_utils
from connect.client.rql import R
from connect.client.utils import parse_content_range
from requests.adapters import HTTPAdapter

from processor.marketplace.errors import (
    ActionRefused,
    MarketplaceError,
    NotFound,
    NotPending,
    TransientError,
)
from processor.marketplace.paging import Page, iter_keyset
from processor.marketplace.retry import CallFailed, OnCall, OnRetry, Retrier
from processor.marketplace.settings import GatewaySettings, Selector

__all__ = ["Marketplace", "NOTE_MAX_CHARS"]

log = structlog.get_logger("processor.marketplace")

NOTE_MAX_CHARS = 2000
_CONVERSATIONS_CACHED = 1024  # request id -> conversation id; one entry is ~100 bytes
_ONCE_KEYS_KEPT = 4096
_MESSAGES_SCANNED = 100  # the newest messages searched for an earlier copy of a note
_PENDING = frozenset({"pending"})
# Statuses a cancel request can be listed in (Connect's workflow for cancels).
_LISTABLE = frozenset(
    {"pending", "scheduled", "revoking", "inquiring", "approved", "failed", "revoked"}
)


class _LRU:
    """A small thread-safe LRU mapping."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class Marketplace:
    """Connect, as the processor uses it. Every method may raise a :class:`MarketplaceError`.

    ``client`` replaces the ConnectClient built from ``settings`` (it should have
    ``max_retries=0``). ``sleep`` and ``clock`` (monotonic seconds) drive backoff and the 429
    gate (without ``sleep``, waits end early when :meth:`stop_on`'s event is set); ``wall_clock`` (epoch seconds) reads HTTP-date ``Retry-After`` values; ``on_retry(cause,
    operation)`` is called before every retry sleep, ``on_call(operation, seconds)`` after every
    HTTP attempt (metrics).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        client: ConnectClient | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_retry: OnRetry | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self.settings = settings
        if client is None:
            if not settings.api_key.strip():
                raise ValueError("GatewaySettings.api_key is empty")
            _size_connection_pool(settings.endpoint, settings.connections)
            client = ConnectClient(
                settings.authorization,
                endpoint=settings.endpoint,
                max_retries=0,  # this gateway owns retries; see processor.marketplace.retry
                timeout=(settings.timeout_connect, settings.timeout_read),
                resourceset_append=False,  # a 100,000-request backlog must not pile up in memory
                default_limit=settings.page_size,
                default_headers={"User-Agent": settings.user_agent},
            )
        self.client = client
        # The client's per-thread requests.Session is created lazily and cannot be configured up
        # front, but every call accepts requests' keyword arguments: TLS verification goes there.
        self._http: dict[str, Any] = {"verify": settings.verify}
        self._secrets = _secret_parts(settings.api_key)
        self._retry = Retrier(
            settings,
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
            on_retry=on_retry,
            on_call=on_call,
            redact=self._redact,
        )
        self._conversations = _LRU(_CONVERSATIONS_CACHED)
        self._notes_posted = _LRU(_ONCE_KEYS_KEPT)
        self._templates: dict[str, str] = {}
        self._templates_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Marketplace(endpoint={self.settings.endpoint!r})"

    def stop_on(self, event: threading.Event) -> None:
        """Retry waits end (with :class:`~processor.marketplace.errors.Stopping`) once ``event`` is
        set: the daemon passes its shutdown event, so no backoff outlasts a SIGTERM."""
        self._retry.stop = event

    def waiting(self) -> list[Any]:
        """Connect calls under way (:class:`~processor.marketplace.retry.Waiting`), oldest first."""
        return self._retry.waiting()

    # -- reading -------------------------------------------------------------------------------

    def iter_pending(self, selector: Selector) -> Iterator[dict[str, Any]]:
        """Every cancel request pending at the start of the pass, each once (keyset paging)."""
        return self.iter_cancels(selector, "pending")

    def iter_cancels(self, selector: Selector, status: str) -> Iterator[dict[str, Any]]:
        """Every cancel request in ``status`` (e.g. ``revoking``, to confirm revocations), each once."""
        if status not in _LISTABLE:
            raise ValueError(
                f"status must be one of {', '.join(sorted(_LISTABLE))}, got {status!r}"
            )
        base = R().type.eq("cancel") & R().status.eq(status) & selector.rql()
        return iter_keyset(lambda query: self._list_page(query), base, self.settings.page_size)

    def count_pending(self, selector: Selector) -> int:
        """How many cancel requests the selector matches now (``limit=0``, Content-Range)."""
        page = self._list("count_pending", self._pending_query(selector), limit=0)
        if page.total is None:
            raise MarketplaceError("count_pending: Connect sent no Content-Range header")
        return page.total

    def get_request(self, request_id: str) -> dict[str, Any]:
        return self._read("get_request", lambda: self.client.requests[request_id].get(**self._http))

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        return self._read("get_asset", lambda: self.client.assets[asset_id].get(**self._http))

    def default_template(self, product_id: str) -> str | None:
        """The product's asset fulfillment template: one flagged or named default, else the first."""
        with self._templates_lock:
            if product_id in self._templates:
                return self._templates[product_id]
        templates = (
            self.client.products[product_id]
            .templates.filter(scope="asset", type="fulfillment")
            .configure(**self._http)
            .limit(100)
        )
        found = self._retry.call(
            "default_template", lambda: self._retry.once(lambda: list(templates[0:100]))
        )
        chosen = _pick_template(found)
        if chosen is not None:
            with self._templates_lock:
                self._templates[product_id] = chosen
        return chosen

    # -- actions on a request ------------------------------------------------------------------

    def approve(
        self, request_id: str, template_id: str, *, effective_date: datetime | None = None
    ) -> dict[str, Any]:
        """Approve; ``effective_date`` tells Connect when the cancellation took effect (the end of a
        billing period, the start of a grace period) when that is not the moment of approval."""
        if not template_id:
            raise ValueError("approve needs a template id")
        payload: dict[str, Any] = {"template_id": template_id}
        if effective_date is not None:
            if effective_date.tzinfo is None:
                raise ValueError("effective_date must be timezone-aware")
            payload["effective_date"] = effective_date.isoformat()
        return self._act("approve", request_id, payload, source=_PENDING, target="approved")

    def fail(self, request_id: str, reason: str) -> dict[str, Any]:
        if not reason or not reason.strip():
            # Connect refuses a fail without a reason (REQ_005); the customer must read one.
            raise ValueError("fail needs a non-empty reason")
        return self._act("fail", request_id, {"reason": reason}, source=_PENDING, target="failed")

    def schedule(self, request_id: str, planned_date: datetime) -> dict[str, Any]:
        if planned_date.tzinfo is None:
            raise ValueError("planned_date must be timezone-aware")
        payload = {"planned_date": planned_date.isoformat()}
        return self._act("schedule", request_id, payload, source=_PENDING, target="scheduled")

    def confirm(self, request_id: str) -> dict[str, Any]:
        """Confirm a revocation (``revoking`` -> ``revoked``): the cancellation is withdrawn."""
        return self._act(
            "confirm", request_id, None, source=frozenset({"revoking"}), target="revoked"
        )

    def assign(
        self, request_id: str, *, email: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """Give the request to a human agent. Setting the same assignee twice is harmless."""
        if (email is None) == (user_id is None):
            raise ValueError("assign needs exactly one of email= or user_id=")
        payload = {"email": email} if email is not None else {"id": user_id}
        action = self.client.requests[request_id]("assign")
        return self._read("assign", lambda: action.post(payload=payload, **self._http))

    def update_params(
        self, request_id: str, params: dict[str, str], note: str | None = None
    ) -> dict[str, Any]:
        """Set parameter values (and the note) of a pending request. A PUT: safe to repeat."""
        payload: dict[str, Any] = {
            "asset": {"params": [{"id": k, "value": v} for k, v in params.items()]}
        }
        if note is not None:
            payload["note"] = note
        resource = self.client.requests[request_id]
        return self._read("update_params", lambda: resource.update(payload=payload, **self._http))

    # -- notes ---------------------------------------------------------------------------------

    def post_note(self, request_id: str, text: str, *, once_key: str | None = None) -> bool:
        """Post a message to the request's conversation; True if posted now, False if already there.

        With ``once_key`` the note is posted at most once: a key seen by this gateway, or the same
        text among the conversation's newest messages (so it survives restarts), means "already
        there". Without it the note is always posted, except that after an ambiguous failure the
        gateway checks for its own text before trying again.
        """
        text = text[:NOTE_MAX_CHARS]
        if not text.strip():
            raise ValueError("a note needs text")
        if once_key is not None and self._notes_posted.get(once_key):
            return False
        conversation_id = self._conversation(request_id)
        if once_key is not None and self._has_message(conversation_id, text):
            self._notes_posted.put(once_key, True)
            return False
        messages = self.client.conversations[conversation_id].messages
        payload = {"text": text, "type": "message"}
        self._ambiguous(
            "post_note",
            send=lambda: messages.create(payload=payload, **self._http),
            reconcile=lambda: (
                True if self._has_message(conversation_id, text, retries=False) else None
            ),
        )
        if once_key is not None:
            self._notes_posted.put(once_key, True)
        return True

    def close(self) -> None:
        """Close this thread's HTTP session. Other threads' sessions close when they are collected."""
        self.client.session.close()

    # -- internals -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _read(self, operation: str, send: Callable[[], Any]) -> dict[str, Any]:
        """An idempotent call: retried freely."""
        result = self._retry.call(operation, lambda: self._retry.once(send))
        if not isinstance(result, dict):
            raise MarketplaceError(f"{operation}: Connect answered with no JSON object")
        return result

    def _ambiguous(
        self, operation: str, *, send: Callable[[], Any], reconcile: Callable[[], Any]
    ) -> Any:
        """A non-idempotent call: after a failure that may have acted, ``reconcile`` runs before any
        new attempt; it returns a result if the call had landed, or None to send again (or raises)."""
        uncertain = False

        def attempt() -> Any:
            nonlocal uncertain
            if uncertain:
                landed = reconcile()
                if landed is not None:
                    log.info("connect_call_landed", operation=operation)
                    return landed
                uncertain = False
            try:
                return self._retry.once(send)
            except CallFailed as failed:
                uncertain = failed.failure.ambiguous
                raise

        return self._retry.call(operation, attempt)

    def _act(
        self,
        operation: str,
        request_id: str,
        payload: dict[str, Any] | None,
        *,
        source: frozenset[str],
        target: str,
    ) -> dict[str, Any]:
        action = self.client.requests[request_id](operation)

        def reconcile(current: dict[str, Any]) -> dict[str, Any] | None:
            status = str(current.get("status") or "")
            if status == target:
                return current
            if status in source:
                return None
            raise NotPending(status, request_id)

        def reread() -> dict[str, Any] | None:
            return reconcile(
                self._retry.once(lambda: self.client.requests[request_id].get(**self._http))
            )

        try:
            result = self._ambiguous(
                operation, send=lambda: action.post(payload=payload, **self._http), reconcile=reread
            )
        except ActionRefused as refused:
            if refused.status_code != 400:
                raise
            # Refused: perhaps because our own earlier attempt (or a crashed run's) already landed.
            current = self.get_request(request_id)
            if reconcile(current) is not None:
                log.info("connect_action_already_done", operation=operation, request_id=request_id)
                return current
            raise
        if isinstance(result, dict) and result.get("status") == target:
            return result
        return self.get_request(request_id)  # an answer without the request: read the final state

    def _pending_query(self, selector: Selector) -> R:
        return R().type.eq("cancel") & R().status.eq("pending") & selector.rql()

    def _list_page(self, query: R) -> Page:
        return self._list("list_pending", query, limit=self.settings.page_size)

    def _list(self, operation: str, query: R, *, limit: int) -> Page:
        # One GET per page, on purpose: the client's ResourceSet iterator follows with offset
        # pages by itself whenever Content-Range shows more rows than came back (a server that
        # caps the page size), and offset paging is exactly what keyset paging must avoid.
        url = f"requests?select(-activation_key,-template)&{query}&ordering(created,id)"
        params = {"limit": limit, "offset": 0}

        def send() -> Page:
            items = self.client.get(url, params=params, **self._http)
            if not isinstance(items, list):  # an HTML page, a proxy's answer: not Connect's API
                raise TransientError(
                    f"{operation}: Connect answered with no JSON list", cause="bad_response"
                )
            total = parse_content_range(self.client.response.headers.get("Content-Range"))
            return Page(items, total.count if total else None)

        return self._retry.call(operation, lambda: self._retry.once(send))

    def _conversation(self, request_id: str) -> str:
        cached = self._conversations.get(request_id)
        if cached:
            return str(cached)
        found = self.client.conversations.filter(instance_id=request_id).configure(**self._http)
        first = self._retry.call("find_conversation", lambda: self._retry.once(found.first))
        if not isinstance(first, dict) or not first.get("id"):
            raise NotFound(f"find_conversation: request {request_id} has no conversation")
        self._conversations.put(request_id, first["id"])
        return str(first["id"])

    def _has_message(self, conversation_id: str, text: str, *, retries: bool = True) -> bool:
        newest = (
            self.client.conversations[conversation_id]
            .messages.all()
            .order_by("-created")
            .configure(**self._http)
            .limit(_MESSAGES_SCANNED)
        )

        def read() -> list[dict[str, Any]]:
            return self._retry.once(lambda: list(newest[0:_MESSAGES_SCANNED]))

        messages = self._retry.call("read_messages", read) if retries else read()
        return any(isinstance(m, dict) and m.get("text") == text for m in messages)


def _cache_user_agent() -> None:
    """connect-openapi-client rebuilds its User-Agent on every call, reading its own version from
    the installed package metadata (a file read and an e-mail header parse, ~0.3 ms of CPU per
    call). The value cannot change while the process runs, so it is computed once."""
    build = getattr(connect_utils, "_get_user_agent", None)
    if callable(build) and not hasattr(build, "cache_info"):
        connect_utils._get_user_agent = functools.lru_cache(maxsize=1)(build)


_cache_user_agent()


def _size_connection_pool(endpoint: str, connections: int) -> None:
    """Give the client's connection pool room for every worker.

    connect-openapi-client shares one ``requests`` adapter per endpoint between the per-thread
    sessions, with requests' default pool of 10 connections: with more workers than that, every
    call beyond the tenth opens a fresh TCP connection and throws it away. The client reads the
    adapter from a module-level mapping on first use, so one placed there first is the one used.
    If a later client version drops that mapping, this does nothing and only speed suffers.
    """
    transports = getattr(connect_fluent, "_SYNC_TRANSPORTS", None)
    if not isinstance(transports, dict):
        return
    current = transports.get(endpoint)
    if current is None or getattr(current, "_pool_maxsize", 0) < connections:
        transports[endpoint] = HTTPAdapter(
            pool_connections=4, pool_maxsize=connections, max_retries=0
        )


def _pick_template(templates: Iterable[Any]) -> str | None:
    candidates = [t for t in templates if isinstance(t, dict) and t.get("id")]
    for template in candidates:
        if template.get("default") is True:
            return str(template["id"])
    for template in candidates:
        names = f"{template.get('name') or ''} {template.get('title') or ''}".lower()
        if "default" in names.split():
            return str(template["id"])
    return str(candidates[0]["id"]) if candidates else None


def _secret_parts(api_key: str) -> tuple[str, ...]:
    """The key and its secret half (after the last ':'), longest first, for redaction."""
    parts = {api_key.strip()}
    if ":" in api_key:
        parts.add(api_key.rsplit(":", 1)[1].strip())
    return tuple(sorted((p for p in parts if len(p) >= 6), key=len, reverse=True))
