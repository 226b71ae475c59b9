"""The marketplace gateway: the only object that talks to Connect.

It wraps a connect-openapi-client ``ConnectClient`` (built by :mod:`processor.marketplace.client`:
its own retries off, pages not accumulated, our timeouts and User-Agent, the environment read
once) and adds three things the client lacks:

- one retry layer (:mod:`processor.marketplace.retry`): backoff, 429 ``Retry-After``, typed errors;
- the reading of ambiguous outcomes. An action (approve, fail, schedule, confirm) whose response
  was lost (no response, timeout, 5xx) may have acted, so before trying again the gateway re-reads
  the request: already in the target status means the action went through; still in the source
  status means try again; anything else means someone else moved it (:class:`NotPending`). A 400
  refusal is read the same way, which makes approve and fail idempotent across a crash between
  "approved" and "recorded". A conversation message is not idempotent either: after an ambiguous
  failure the gateway looks for the same text before posting it again
  (:mod:`processor.marketplace.notes`);
- keyset paging of pending requests (:mod:`processor.marketplace.paging`).

Thread safety: the client keeps one HTTP session per thread; the gateway's caches and throttle
gate are locked, so worker threads may share one gateway while another thread lists requests.
Secrets: the API key is sent only in the Authorization header; it is never logged, never part of
an error message (server texts are redacted), and hidden from ``repr`` of the settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import structlog
from connect.client import ClientError, ConnectClient
from connect.client.rql import R

from processor.marketplace.boundary import Unreadable, content_range
from processor.marketplace.client import build_client, environment_verify
from processor.marketplace.errors import (
    ActionRefused,
    MarketplaceError,
    NotPending,
    PageRefused,
    TransientError,
)
from processor.marketplace.notes import NOTE_MAX_CHARS, Notes
from processor.marketplace.paging import Page, iter_keyset
from processor.marketplace.retry import CallFailed, OnCall, OnRetry, Retrier
from processor.marketplace.settings import GatewaySettings, Selector, rql_datetime
from processor.observe import mask_with, secret_forms
from processor.urls import UnsafeSegment, segment, segment_problem

__all__ = ["ConnectGateway", "NOTE_MAX_CHARS"]

log = structlog.get_logger("processor.marketplace")

_PENDING = frozenset({"pending"})
# Statuses a cancel request can be listed in (Connect's workflow for cancels).
_LISTABLE = frozenset(
    {"pending", "scheduled", "revoking", "inquiring", "approved", "failed", "revoked"}
)


class ConnectGateway:
    """Connect, as the processor uses it. Every method may raise a :class:`MarketplaceError`.

    ``client`` replaces the ConnectClient built from ``settings`` (it should have
    ``max_retries=0``). ``sleep`` and ``clock`` (monotonic seconds) drive backoff and the 429
    gate (without ``sleep``, waits end early when :meth:`stop_on`'s event is set);
    ``wall_clock`` (epoch seconds) reads HTTP-date ``Retry-After`` values; ``on_retry(cause,
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
            client = build_client(settings)
        self.client = client
        # The client's per-thread requests.Session is created lazily and cannot be configured up
        # front, but every call accepts requests' keyword arguments: TLS verification goes there,
        # with the CA bundle the environment names read once, here (see .client).
        self._http: dict[str, Any] = {"verify": environment_verify(settings.verify)}
        self._secrets = secret_forms(settings.api_key)  # every form, derived once
        self._retry = Retrier(
            settings,
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
            on_retry=on_retry,
            on_call=on_call,
            redact=self._redact,
        )
        self._notes = Notes(
            client,
            self._retry,
            self._http,
            lambda operation, send, reconcile: self._ambiguous(
                operation, send=send, reconcile=reconcile
            ),
        )
        self._templates: dict[str, str] = {}
        self._templates_lock = threading.Lock()
        self._template_lookups: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"ConnectGateway(endpoint={self.settings.endpoint!r})"

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

    def iter_cancels(
        self,
        selector: Selector,
        status: str,
        *,
        updated_since: datetime | None = None,
        updated_until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every cancel request in ``status`` (e.g. ``revoking``, to confirm revocations), each
        once; with ``updated_since`` / ``updated_until``, only those last changed in that range
        (``reconcile``: what was approved or failed on Connect, by anyone)."""
        if status not in _LISTABLE:
            raise ValueError(
                f"status must be one of {', '.join(sorted(_LISTABLE))}, got {status!r}"
            )
        base = R().type.eq("cancel") & R().status.eq(status) & selector.rql()
        if updated_since is not None:
            base &= R().updated.ge(rql_datetime(updated_since))
        if updated_until is not None:
            base &= R().updated.lt(rql_datetime(updated_until))
        return iter_keyset(
            lambda query, limit: self._list("list_pending", query, limit=limit, pages=True),
            base,
            self.settings.page_size,
        )

    def count_pending(self, selector: Selector) -> int:
        """How many cancel requests the selector matches now (``limit=0``, Content-Range)."""
        page = self._list("count_pending", self._pending_query(selector), limit=0)
        if page.total is None:
            raise MarketplaceError("count_pending: Connect sent no Content-Range header")
        return page.total

    def get_request(self, request_id: str) -> dict[str, Any]:
        resource = self.client.requests[_segment("get_request", "request", request_id)]
        return self._read("get_request", lambda: resource.get(**self._http))

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        resource = self.client.assets[_segment("get_asset", "asset", asset_id)]
        return self._read("get_asset", lambda: resource.get(**self._http))

    def default_template(self, product_id: str) -> str | None:
        """The product's asset fulfillment template: one flagged or named default, else the
        first."""
        with self._templates_lock:
            if product_id in self._templates:
                return self._templates[product_id]
            # One look-up per product: workers that need the same product's template at once
            # wait for the first one's answer instead of each asking Connect.
            product_lock = self._template_lookups.setdefault(product_id, threading.Lock())
        with product_lock:
            with self._templates_lock:
                if product_id in self._templates:
                    return self._templates[product_id]
            templates = (
                self.client.products[_segment("default_template", "product", product_id)]
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
        self,
        request_id: str,
        template_id: str,
        *,
        effective_date: datetime | None = None,
        first_attempt: bool = False,
    ) -> dict[str, Any]:
        """Approve; ``effective_date`` tells Connect when the cancellation took effect (the end of a
        billing period, the start of a grace period) when that is not the moment of approval.

        ``first_attempt=True`` says no earlier approve of this request by this journal can have
        reached Connect: a request found approved already was then approved by someone else,
        and :class:`NotPending` ``approved`` says so (by default it counts as done: a crashed
        run's own approve)."""
        if not template_id:
            raise ValueError("approve needs a template id")
        payload: dict[str, Any] = {"template_id": template_id}
        if effective_date is not None:
            if effective_date.tzinfo is None:
                raise ValueError("effective_date must be timezone-aware")
            payload["effective_date"] = effective_date.isoformat()
        return self._act(
            "approve",
            request_id,
            payload,
            source=_PENDING,
            target="approved",
            first_attempt=first_attempt,
        )

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
        action = self.client.requests[_segment("assign", "request", request_id)]("assign")
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
        resource = self.client.requests[_segment("update_params", "request", request_id)]
        return self._read("update_params", lambda: resource.update(payload=payload, **self._http))

    # -- notes ---------------------------------------------------------------------------------

    def post_note(
        self,
        request_id: str,
        text: str,
        *,
        once_key: str | None = None,
        first_attempt: bool = False,
    ) -> bool:
        """Post a message to the request's conversation; True if posted now, False if already there.

        With ``once_key`` the note is posted at most once: a key seen by this gateway, or the same
        text among the conversation's newest messages (so it survives restarts), means "already
        there". ``first_attempt=True`` says no earlier attempt of this note (this ``once_key``)
        can have reached Connect, in this process or any other: the messages are then not read
        before the post (the default reads them). Without ``once_key`` the note is always posted.
        Either way, after an ambiguous failure the gateway checks for its own text before trying
        again.
        """
        return self._notes.post(request_id, text, once_key=once_key, first_attempt=first_attempt)

    def close(self) -> None:
        """Close this thread's HTTP session. Other threads' sessions close when they are
        collected."""
        self.client.session.close()

    # -- internals -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return mask_with(text, self._secrets)

    def _read(self, operation: str, send: Callable[[], Any]) -> dict[str, Any]:
        """An idempotent call: retried freely."""
        result = self._retry.call(operation, lambda: self._retry.once(send))
        if not isinstance(result, dict):
            raise MarketplaceError(f"{operation}: Connect answered with no JSON object")
        return result

    def _ambiguous(
        self, operation: str, *, send: Callable[[], Any], reconcile: Callable[[], Any]
    ) -> Any:
        """A non-idempotent call: after a failure that may have acted, ``reconcile`` runs before
        any new attempt; it returns a result if the call had landed, or None to send again (or
        raises)."""
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
        first_attempt: bool = False,
    ) -> dict[str, Any]:
        resource = self.client.requests[_segment(operation, "request", request_id)]
        action = resource(operation)

        def reconcile(current: dict[str, Any]) -> dict[str, Any] | None:
            status = str(current.get("status") or "")
            if status == target:
                return current
            if status in source:
                return None
            raise NotPending(status, request_id)

        def reread() -> dict[str, Any] | None:
            return reconcile(self._retry.once(lambda: resource.get(**self._http)))

        sends = 0

        def send() -> Any:
            nonlocal sends
            sends += 1
            return action.post(payload=payload, **self._http)

        try:
            result = self._ambiguous(operation, send=send, reconcile=reread)
        except ActionRefused as refused:
            if refused.status_code != 400:
                raise
            # Refused: perhaps because our own earlier attempt (or a crashed run's) already landed.
            current = self.get_request(request_id)
            if reconcile(current) is not None:
                if first_attempt and sends == 1:  # refused at our only send: someone else did it
                    raise NotPending(target, request_id) from None
                log.info("connect_action_already_done", operation=operation, request_id=request_id)
                return current
            raise
        if isinstance(result, dict) and result.get("status") == target:
            return result
        return self.get_request(request_id)  # an answer without the request: read the final state

    def _pending_query(self, selector: Selector) -> R:
        return R().type.eq("cancel") & R().status.eq("pending") & selector.rql()

    def _list(self, operation: str, query: R, *, limit: int, pages: bool = False) -> Page:
        # One GET per page, on purpose: the client's ResourceSet iterator follows with offset
        # pages by itself whenever Content-Range shows more rows than came back (a server that
        # caps the page size), and offset paging is exactly what keyset paging must avoid.
        url = f"requests?select(-activation_key,-template)&{query}&ordering(created,id)"
        params = {"limit": limit, "offset": 0}

        def send() -> Page:
            try:
                items = self.client.get(url, params=params, **self._http)
            except ClientError as exc:
                refused = exc.__cause__
                if pages and isinstance(refused, Unreadable):  # refused again if asked again
                    # One line per refused page: the pass asks smaller pages next (paging).
                    log.warning("listing_page_refused", limit=limit, reason=str(refused))
                    raise PageRefused(f"{operation}: {refused}", body=refused.body) from None
                raise
            if not isinstance(items, list):  # an HTML page, a proxy's answer: not Connect's API
                raise TransientError(
                    f"{operation}: Connect answered with no JSON list", cause="bad_response"
                )
            total = content_range(self.client.response.headers.get("Content-Range"))
            return Page(items, total.count if total else None)

        return self._retry.call(operation, lambda: self._retry.once(send))

    # -- completeness --------------------------------------------------------------------------

    def count_unaccounted(
        self, selector: Selector, accounted: Iterable[str], *, names: int = 10
    ) -> tuple[int, list[str]]:
        """How many cancels the selector matches pending now whose id is not in ``accounted``
        (counted by Connect: ``Content-Range`` of ``limit=0``-like reads, not by the keyset
        listing), and up to ``names`` of their ids. Up to 200 accounted ids go in one
        ``out(id, ...)`` (about 5 KB of URL, under common proxies' limits); more are counted in
        chunks with ``in(id, ...)`` and subtracted from the total (the names are then read from
        the first page)."""
        known = set(accounted)
        ids, chunk_size = sorted(known), 200
        base = self._pending_query(selector)

        def counted(operation: str, query: R, limit: int) -> Page:
            page = self._list(operation, query, limit=limit)
            if page.total is None:
                raise MarketplaceError(f"{operation}: Connect sent no Content-Range header")
            return page

        def ids_of(page: Page) -> list[str]:
            found = (i.get("id") for i in page.items if isinstance(i, dict))
            return [i for i in found if isinstance(i, str) and i not in known][:names]

        if len(ids) <= chunk_size:
            query = base & R().id.out(ids) if ids else base
            page = counted("count_unaccounted", query, names)
            return page.total or 0, ids_of(page)
        among = 0
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            among += counted("count_unaccounted", base & R().id.in_(chunk), 0).total or 0
        first = counted("count_unaccounted", base, min(100, self.settings.page_size))
        return max((first.total or 0) - among, 0), ids_of(first)


def _segment(operation: str, kind: str, value: str) -> str:
    """``value`` as one path segment of ``kind`` (:func:`processor.urls.segment`); a value that
    cannot be one is Connect's "no" given before anything is sent: :class:`ActionRefused`."""
    try:
        return segment(kind, value)
    except UnsafeSegment as unsafe:
        raise ActionRefused(
            None, "unsafe_id", [f"{unsafe}; nothing was sent"], operation=operation
        ) from None


def _pick_template(templates: Iterable[Any]) -> str | None:
    candidates = [
        t
        for t in templates
        if isinstance(t, dict) and segment_problem("template", t.get("id")) is None
    ]
    for template in candidates:
        if template.get("default") is True:
            return str(template["id"])
    for template in candidates:
        names = f"{template.get('name') or ''} {template.get('title') or ''}".lower()
        if "default" in names.split():
            return str(template["id"])
    return str(candidates[0]["id"]) if candidates else None
