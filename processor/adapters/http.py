"""The ``http`` adapter: a vendor's REST API, described by options instead of code.

``HttpAdapter(options)`` validates every option at start-up (unknown keys included) and raises
:class:`AdapterError` naming the key. The default paths are the local mock vendor's
(``/v1/subscriptions/{subscription_id}/terminate``); the default outcome map names no vendor's
error codes (see Outcomes). A null option means its default, except
for ``body`` and ``success_field``, where null means none (no body, no success check)::

    base_url: https://vendor.example.com      # http or https; may carry a path prefix
    idempotency: key                          # key | natural | none (default none: the safe guess)
    idempotency_header: Idempotency-Key       # sent on mutations, in key mode only
    auth: {type: bearer, env: VENDOR_TOKEN}   # bearer | basic (+username) | header (+header)
                                              # | oauth2 (token_url, client_id, ...: see
                                              # processor.adapters.http_oauth) | none; the
                                              # secret comes from env: or file: only
    tls: {cert: client.pem, key: client.key}  # a client certificate (mTLS; .http_tls)
    rate: {calls: 10, per: 1}                 # at most 10 calls a second (.rate)
    headers: {}                               # static, non-secret extra headers
    timeout: {connect: 5, read: 20}           # seconds; read is per socket read, not per answer
    verify: true                              # or the path of a CA bundle; never off
    proxy: null                               # an http(s) proxy URL; none from the environment
    body: {request_id: "{request_id}", reason_code: "{reason_code}", comment: "{reason_comment}"}
    outcomes: {"404": [{when: {error: not_found}, outcome: already_gone}, failed]}
    refusal: {field: message, default: "..."} # where a refusal's customer-facing reason is
    max_retry_after: 3600                     # cap on a vendor's Retry-After, seconds
    subscription_id_pattern: "SUB-[0-9]{1,12}"  # default: processor.urls.VENDOR_ID
    max_comment_chars: 1000                   # customer text sent, cut with a marker
    terminate: {method: POST, path: "/v1/subscriptions/{subscription_id}/terminate",
                success_field: status, success_values: [terminated, purged],
                body: ..., outcomes: ...}  # body and outcomes: per operation, over the above
    suspend: true     # or a mapping like terminate's; absent: the adapter has no suspend()
    purge: true       # likewise (success_values: [purged])
    status: true      # {method: GET, path: "/v1/subscriptions/{subscription_id}", field: status,
                      #  values: {cancelled: terminated}}; absent: the adapter has no status()
    probe: {subscription_id: SUB-KNOWN, expect: [active]}  # or {path: /healthz}: what
                      # cancel-processor check asks (see processor.adapters.http_probe)

Templates (paths and body strings) name fields in braces: :data:`TEMPLATE_FIELDS` and
``params.<parameter id>``; an unknown field is a start-up error. Path values go through
:func:`processor.urls.segment`: each is checked for its kind (Connect's id grammar for
``request_id``, ``asset_id``, ``product_id``, ``marketplace_id``; the subscription id rule for
``subscription_id``; :data:`processor.urls.VENDOR_ID` for the rest) and percent-encoded as one
segment, or nothing is sent. Body values that render empty are left out.

Subscription ids. ``subscription_id_pattern`` (a regular expression matched whole; default
:data:`processor.urls.VENDOR_ID`: letters, digits, ``._:@-``, starting with a letter or digit, at
most 128 characters, not inf/infinity/nan) is checked on every call before anything is sent, in
the path or not: a request whose id does not match is parked as malformed before any vendor call.

Customer text. ``reason_comment`` (the customer's cancellation comment) and ``reason_code`` lose
their control characters and are cut to ``max_comment_chars`` (default 1000) and 200 characters,
ending with ``…[truncated]`` (:func:`processor.model.customer_text`). No field varies between
attempts, because a body that changes under the same idempotency key is another request to a
Stripe-like vendor.

Outcomes. A status code is looked up exactly, then by range (``4xx``); an entry is an outcome name
(:data:`OUTCOME_NAMES`) or a list of rules matched against the JSON body, first match wins.
Defaults: 2xx success, 429 and 503 retry_later, other 5xx ambiguous, everything else failed (a
definite error, counted toward ``processing.max_attempts``, then parked by default), with a detail
naming the method, the URL template, the status and the start of the body. No status code alone
ends a request: ``already_gone`` and ``refused`` (and ``success`` outside 2xx) need a ``when``
condition on the body, checked at start-up; a bare 404 may be a mistyped path. The mock vendor's
map is :data:`cancel_sandbox.vendor.outcomes.MOCK_VENDOR_OUTCOMES`. A transport failure that
proves nothing was sent (refused, DNS, connect timeout, certificate rejected) is
:class:`RetryLater`; one after the request may have left (read timeout, reset, dropped
mid-answer) is :class:`Ambiguous`. So is a 2xx whose body fails the success check (not JSON, or
the wrong status): the vendor got the call and may have acted but did not confirm it, so the
engine confirms (same key again, or a status read) or parks the request. It never approves on
nonsense and never repeats blindly. ``success_field: null`` accepts any 2xx (a vendor answering
204). A status read changes nothing, so its uncertain outcomes are :class:`RetryLater`.

No retries happen here (the engine owns them; urllib3's are off) and redirects are not followed.
The options are parsed by :mod:`.http_options` (with :mod:`.http_values`, :mod:`.http_templates`
and :mod:`.http_outcomes`); sessions and transport failures are :mod:`.http_transport`'s;
the hooks around each call (OAuth2 token, rate limit, one repeat after a 401) :mod:`.http_send`'s.
Limits: bodies are read up to 1 MiB; the secret is read once, at start-up; one session per calling
thread (the engine's pool is fixed), all closed by :meth:`HttpAdapter.close`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import requests

from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Idempotency,
    Outcome,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorCall,
)
from processor.adapters.http_oauth import TokenSource
from processor.adapters.http_options import (
    DEFAULT_OUTCOMES,
    OUTCOME_NAMES,
    TEMPLATE_FIELDS,
    HttpSettings,
    Operation,
    lookup,
    parse_options,
    render_body,
    scalar,
    short,
)
from processor.adapters.http_send import Answer, noted, send
from processor.adapters.http_text import (
    body_text,
    customer_reason,
    retry_after_seconds,
)
from processor.adapters.http_text import detail as describe
from processor.adapters.http_tls import client_cert_refused
from processor.adapters.http_transport import (
    UNBUILDABLE,
    new_session,
    parse_json,
    tls_failure,
    unsent,
)
from processor.adapters.rate import RateLimit
from processor.model import customer_text
from processor.observe import mask_with, secret_forms
from processor.urls import UnsafeSegment, segment, segment_problem

__all__ = [
    "DEFAULT_OUTCOMES",
    "OUTCOME_NAMES",
    "TEMPLATE_FIELDS",
    "HttpAdapter",
    "retry_after_seconds",
]


class HttpAdapter:
    """``HttpAdapter(options)``: a vendor REST API (see the module docstring for the options).

    Thread-safe: the settings do not change after construction and each calling thread has its
    own ``requests.Session``. ``suspend``, ``purge`` and ``status`` exist as attributes only when
    configured, because the engine detects optional capabilities by their presence.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.settings: HttpSettings = parse_options(options)
        self.name = "http"
        self.idempotency: Idempotency = self.settings.idempotency
        # Instance attributes, so that callable(getattr(adapter, "status", None)) tells the truth.
        operations = self.settings.operations
        if "suspend" in operations:
            self.suspend: Callable[[VendorCall], Outcome] = self._suspend
        if "purge" in operations:
            self.purge: Callable[[VendorCall], Outcome] = self._purge
        if "status" in operations:
            self.status: Callable[[VendorCall], SubscriptionStatus | RetryLater | Failed] = (
                self._status
            )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._generation = 0  # bumped by close(), so that no thread reuses a closed session
        self.tokens: TokenSource | None = None
        if self.settings.oauth is not None:
            proxy = self.settings.proxy
            proxies = {} if proxy is None else {"proxies": {"http": proxy, "https": proxy}}
            self.tokens = TokenSource(self.settings.oauth, {**self.transport_options(), **proxies})
        self.rate = None if self.settings.rate is None else RateLimit(self.settings.rate)

    def terminate(self, call: VendorCall) -> Outcome:
        return self._perform("terminate", call)  # type: ignore[return-value]

    def _suspend(self, call: VendorCall) -> Outcome:
        return self._perform("suspend", call)  # type: ignore[return-value]

    def _purge(self, call: VendorCall) -> Outcome:
        return self._perform("purge", call)  # type: ignore[return-value]

    def _status(self, call: VendorCall) -> SubscriptionStatus | RetryLater | Failed:
        return self._perform("status", call)  # type: ignore[return-value]

    def probe(self) -> Any:
        """What ``cancel-processor check`` asks this vendor (the ``probe`` option; see
        :mod:`.http_probe`)."""
        from processor.adapters.http_probe import probe

        return probe(self)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._generation += 1
        for session in sessions:
            session.close()
        if self.rate is not None:
            self.rate.close()

    def __repr__(self) -> str:
        s = self.settings
        auth = s.credential.kind if s.credential else "oauth2" if s.oauth else "none"
        return (
            f"HttpAdapter(name={self.name!r}, base_url={s.base_url!r}, idempotency="
            f"{self.idempotency.value!r}, operations={sorted(s.operations)}, auth={auth!r})"
        )

    def check_call(self, operation: str, call: VendorCall) -> str | None:
        """Why ``call`` must not be sent: a path value that is empty or would change the URL.

        ``/`` is sent as ``%2F``, which many routers decode into another path; ``..`` climbs out
        of it; control characters split it. The engine asks before it records an intent and parks
        such a request as malformed; :meth:`_perform` asks again, so nothing is ever sent.
        """
        op = self.settings.operations.get(operation)
        if op is None:
            return None
        return self._call_problem(op, call, _fields(call, self.settings.max_comment_chars))

    def _call_problem(
        self, op: Operation, call: VendorCall, fields: Mapping[str, str]
    ) -> str | None:
        rule = self.settings.subscription_rule
        for name in op.path.path_fields():
            problem = segment_problem(_kind(name), fields.get(name, ""), self._rule(name))
            if problem is not None:
                return f"{name} {problem} for the URL {op.path.text}"
        # In the path or not, the id must be one the vendor could have issued.
        problem = segment_problem("subscription", call.subscription_id, rule)
        if problem is not None:
            return f"subscription_id {problem}"
        return None

    def _rule(self, name: str) -> re.Pattern[str] | None:
        """The configured rule for the subscription id; the default one for other values."""
        return self.settings.subscription_rule if _kind(name) == "subscription" else None

    def _segment(self, name: str, value: str) -> str:
        return segment(_kind(name), value, self._rule(name))

    def _perform(self, name: str, call: VendorCall) -> Outcome | SubscriptionStatus:
        op = self.settings.operations[name]
        fields = _fields(call, self.settings.max_comment_chars)
        empty = [f for f in op.path.fields() if not fields.get(f)]
        if empty:
            return Failed(f"{name}: no {empty[0]} for the URL; nothing was sent")
        problem = self._call_problem(op, call, fields)
        if problem:
            return Failed(f"{name}: {problem}; nothing was sent")
        try:
            url = self.settings.base_url + op.path.render_path(fields, self._segment)
        except UnsafeSegment as unsafe:  # the checks above cover every path field: a last guard
            return Failed(f"{name}: {unsafe}; nothing was sent")
        headers = {"Accept": "application/json", **self.settings.headers}
        if self.settings.credential is not None:
            headers[self.settings.credential.header] = self.settings.credential.value
        if self.idempotency is Idempotency.KEY and op.method != "GET":
            headers[self.settings.idempotency_header] = call.idempotency_key
        body = None if op.body is None else render_body(op.body, fields)
        # A status read changes nothing: only a mutation asks whether it may still leave.
        may_send = call.send_problem if op.method != "GET" else None
        sent = send(self, op, url, body, headers, may_send)
        if not isinstance(sent, Answer):
            return sent
        return noted(self._answer(op, sent.code, sent.headers, sent.raw), sent.note)

    def transport_options(self) -> dict[str, Any]:
        """What every request to the vendor (and to its token endpoint) is sent with."""
        return {
            "timeout": self.settings.timeout,
            "verify": self.settings.verify,
            "cert": self.settings.client_cert,
            "allow_redirects": False,
        }

    def _transport(self, op: Operation, exc: Exception) -> Outcome:
        what = self._scrub(f"{type(exc).__name__}: {exc}")[:300]
        if isinstance(exc, UNBUILDABLE):
            return Failed(f"{op.name}: the request could not be built ({what}); nothing was sent")
        refused = client_cert_refused(exc)
        if refused is not None:
            return Failed(
                f"{op.name}: the vendor refused the client certificate in option tls.cert "
                f"({refused}); nothing was sent"
            )
        tls = tls_failure(exc)
        if tls is not None:
            return RetryLater(
                f"{op.name}: TLS verification failed ({self._scrub(tls)[:200]}); nothing was sent. "
                "To trust a private CA, set the adapter option verify to its CA bundle file"
            )
        if unsent(exc):
            return RetryLater(f"{op.name}: could not connect; nothing was sent ({what})")
        if op.statuses is not None:  # a status read changes nothing: asking again is always safe
            return RetryLater(f"{op.name}: no whole answer ({what})")
        return Ambiguous(f"{op.name}: the request was sent but no whole answer came back ({what})")

    def _answer(
        self, op: Operation, code: int, headers: Mapping[str, str], raw: bytes
    ) -> Outcome | SubscriptionStatus:
        body = parse_json(raw)
        outcome = op.outcome_for(code, body)
        detail = self._scrub(describe(op.name, code, body, headers))
        # A status read changes nothing, so its "may have acted" is only "ask again".
        if outcome == "retry_later" or (outcome == "ambiguous" and op.statuses is not None):
            after = retry_after_seconds(
                headers.get("Retry-After"), cap=self.settings.max_retry_after
            )
            return RetryLater(detail, after=after)
        if outcome == "failed":
            # A definite error is read by a person: say which call, what came back, and why it
            # decides nothing (a mistyped path answers 404, a token without the scope 403).
            detail = self._scrub(
                f"{detail} from {op.method} {self.settings.base_url}{op.path.text}; "
                f"body: {body_text(raw)}"
            )
        if op.statuses is not None:
            return _status_answer(op, outcome, body, detail)
        if outcome == "success":
            if op.key_path is None:
                return Terminated(detail)
            value = scalar(lookup(body, op.key_path))
            if isinstance(body, dict) and value in op.accept:
                return Terminated(detail)
            found = (
                f"{op.key_path} is {short(value)}"
                if isinstance(body, dict)
                else "the body is not a JSON object"
            )
            expected = " or ".join(sorted(str(v) for v in op.accept))
            return Ambiguous(f"{detail} but {found}, not {expected}; the vendor may have acted")
        if outcome == "already_gone":
            return AlreadyGone(detail)
        if outcome == "refused":
            reason = lookup(body, self.settings.refusal_field)
            return Refused(self._scrub(customer_reason(reason, self.settings.refusal_default)))
        if outcome == "ambiguous":
            return Ambiguous(f"{detail}; the vendor may have acted")
        return Failed(detail)

    def _session(self) -> requests.Session:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            session = new_session(self.settings.proxy)
            with self._lock:
                self._sessions.append(session)
                local.session, local.generation = session, self._generation
        return local.session  # type: ignore[no-any-return]

    def _scrub(self, text: str) -> str:
        secrets = self.settings.credential.secrets if self.settings.credential else ()
        if self.tokens is not None:  # tokens change: their forms are derived as they come
            forms = {f for token in self.tokens.secrets() for f in secret_forms(token)}
            secrets = (*secrets, *sorted(forms, key=len, reverse=True))
        return mask_with(text, secrets)


def _status_answer(
    op: Operation, outcome: str, body: Any, detail: str
) -> SubscriptionStatus | Failed:
    assert op.statuses is not None and op.key_path is not None
    if outcome == "already_gone":
        return SubscriptionStatus.NOT_FOUND
    if outcome != "success":
        return Failed(detail)
    value = scalar(lookup(body, op.key_path))
    if value is None:
        return Failed(f"{detail} but the body has no {op.key_path}")
    return op.statuses.get(value) or op.statuses.get(value.lower(), SubscriptionStatus.UNKNOWN)


# The kind of each template field's value, for processor.urls (others: a vendor value).
_KINDS = {
    "request_id": "request",
    "asset_id": "asset",
    "product_id": "product",
    "marketplace_id": "marketplace",
    "subscription_id": "subscription",
}


def _kind(name: str) -> str:
    return _KINDS.get(name, "vendor")


def _fields(call: VendorCall, comment_chars: int) -> dict[str, str]:
    r = call.request
    values = {
        "subscription_id": call.subscription_id,
        "request_id": r.id,
        "asset_id": r.asset_id,
        "product_id": r.product_id,
        "marketplace_id": r.marketplace_id,
        "environment": r.environment,
        "customer_id": r.customer_id,
        "external_id": r.external_id,
        "idempotency_key": call.idempotency_key,
        "reason_code": None if call.reason_code is None else customer_text(call.reason_code, 200),
        "reason_comment": None
        if call.reason_comment is None
        else customer_text(call.reason_comment, comment_chars),
    }
    fields = {k: "" if v is None else str(v) for k, v in values.items()}
    fields.update((f"params.{k}", v) for k, v in r.params.items())
    return fields
