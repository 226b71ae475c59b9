"""The ``http`` adapter's calls: :class:`HttpAdapter`, a vendor's REST API described by options.

:class:`HttpAdapter` sends each configured operation (terminate, and suspend, purge and the status
read when configured) as its options say (:mod:`.settings`, which documents every option), and
reads the answer, or the failure, into an outcome (:mod:`.outcomes`). Every path value and the
subscription id are checked before anything is sent (:meth:`HttpAdapter.check_call`). No retries
happen here: the engine owns them, with the journal and the same idempotency key.

One call on the wire, the hooks around it in order (:func:`send`):

1. OAuth2 (:mod:`.oauth`): a live token in the Authorization header; a token endpoint that
   fails ends the call with its outcome, nothing sent.
2. The rate limit (:mod:`processor.adapters.rate`): wait for a slot.
3. Send, read the body within its limit; a transport failure is the outcomes' to read.
4. OAuth2 again: a 401 drops the token and, when a second call is harmless
   (:func:`~.oauth.repeat_is_safe`), sends once more with a new one; otherwise the 401 stands
   with a note saying why it was not repeated.

Sessions do exactly what the options say: one per calling thread (the engine's pool is fixed), all
closed by :meth:`HttpAdapter.close`; no proxy, CA bundle or ``.netrc`` credentials (which would
replace the Authorization header) from the environment, no retries (urllib3's are off), no
redirects followed. Limits: bodies are read up to 1 MiB; the secret is read once, at start-up.

The probe: what ``cancel-processor check`` asks the vendor before any request is touched. The
option ``probe`` says how (see :class:`~.settings.ProbeSettings`)::

    probe: {subscription_id: SUB-KNOWN-1, expect: [active]}  # a status read of a known one
    probe: {path: /healthz}                                    # or GET a health path (with auth)

A status read through the configured ``status`` operation proves the most: the base URL, the path
template, the token and the outcome map together. Without ``probe`` the check only proves that the
base URL answers HTTP at all, and says so.

Results are ``ok``, ``config`` (the vendor answered, and the answer says the configuration is wrong:
404 on the path, 401/403 on the token, a status not expected) or ``unreachable`` (nothing answered,
or it answered 429/5xx: try again later).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import requests
import urllib3

from processor.adapters.base import (
    Ambiguous,
    Failed,
    Idempotency,
    Outcome,
    PollAnswer,
    RetryLater,
    SubscriptionStatus,
    VendorCall,
)
from processor.adapters.http.oauth import TokenError, TokenSource, repeat_is_safe
from processor.adapters.http.operations import accepted_outcome, poll_answer, poll_url
from processor.adapters.http.outcomes import (
    answer_outcome,
    describe,
    failure_outcome,
    parse_json,
    retry_after_seconds,
)
from processor.adapters.http.settings import (
    HttpSettings,
    Operation,
    Template,
    parse_options,
    render_body,
)
from processor.adapters.rate import RateLimit
from processor.model import CancelRequest, customer_text
from processor.observe import mask_with, secret_forms
from processor.urls import UnsafeSegment, segment, segment_problem

__all__ = ["MAX_BODY_BYTES", "Answer", "HttpAdapter", "ProbeResult", "noted", "probe", "send"]


class HttpAdapter:
    """``HttpAdapter(options)``: a vendor REST API (:mod:`.settings` says what the options mean).

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
        if any(op.accepts is not None for op in operations.values()):
            self.poll: Callable[[VendorCall, str], PollAnswer] = self._poll
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
        :func:`probe`)."""
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
        if op.accepts is not None and sent.code in op.accepts.statuses:
            detail = self._scrub(describe(name, sent.code, parse_json(sent.raw), sent.headers))
            body = parse_json(sent.raw)
            base = self.settings.base_url
            return accepted_outcome(op.accepts, name, sent.headers, body, detail, base)
        outcome = answer_outcome(op, sent.code, sent.headers, sent.raw, self.settings, self._scrub)
        return noted(outcome, sent.note)

    def _poll(self, call: VendorCall, operation: str) -> PollAnswer:
        """The state of an accepted operation (:mod:`.operations`): a read, sent as a status read
        is (token, rate limit, no idempotency key), never to a URL off the vendor's base_url."""
        step = str(call.extra.get("step") or "")
        specs = {n: op.accepts for n, op in self.settings.operations.items() if op.accepts}
        spec = specs.get(step) or next(iter(specs.values()))
        url = poll_url(spec, operation, self.settings.base_url)
        if isinstance(url, Failed):
            return url
        headers = {"Accept": "application/json", **self.settings.headers}
        if self.settings.credential is not None:
            headers[self.settings.credential.header] = self.settings.credential.value
        read = Operation("poll", "GET", Template("/", "poll"), None, {}, spec.field, statuses={})
        sent = send(self, read, url, None, headers, None)
        if not isinstance(sent, Answer):
            return sent if isinstance(sent, (RetryLater, Failed)) else RetryLater(str(sent))
        body = parse_json(sent.raw)
        detail = self._scrub(describe("poll", sent.code, body, sent.headers))
        after = retry_after_seconds(
            sent.headers.get("Retry-After"), cap=self.settings.max_retry_after
        )
        return poll_answer(spec, sent.code, body, detail, after)

    def transport_options(self) -> dict[str, Any]:
        """What every request to the vendor (and to its token endpoint) is sent with."""
        return {
            "timeout": self.settings.timeout,
            "verify": self.settings.verify,
            "cert": self.settings.client_cert,
            "allow_redirects": False,
        }

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


# -- one call on the wire --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    headers: Mapping[str, str]
    raw: bytes
    note: str = ""  # appended to a failed outcome's detail (why a 401 was not repeated)


def send(
    adapter: HttpAdapter,
    op: Operation,
    url: str,
    body: Any,
    headers: dict[str, str],
    may_send: Callable[[], str | None] | None = None,
) -> Answer | Outcome:
    """Send ``op`` (see the module docstring): the vendor's answer, or the outcome that ended it.
    ``may_send`` (the call's :meth:`~processor.adapters.base.VendorCall.send_problem`) is asked
    after every wait, just before the request leaves; a reason not to send ends the call with
    :class:`RetryLater`, nothing sent."""
    answer: Answer | None = None
    for renewed in (False, True):
        token = None
        if adapter.tokens is not None:
            try:
                token = adapter.tokens.token()
            except TokenError as exc:
                if answer is None:
                    return exc.outcome(op.name)
                return replace(answer, note=f"; renewing the token failed ({exc})")
            headers["Authorization"] = f"Bearer {token}"
        if adapter.rate is not None:
            adapter.rate.acquire(adapter.name)
        if may_send is not None and (why := may_send()) is not None:
            return RetryLater(f"{op.name}: not sent: {why}")
        try:
            options = adapter.transport_options()
            response = adapter._session().request(
                op.method, url, json=body, headers=headers, **options, stream=True
            )
            with response:
                answer = Answer(response.status_code, response.headers, read_body(response))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            return failure_outcome(op, exc, adapter._scrub)
        if answer.code != 401 or token is None or renewed:
            return answer
        # The token was refused (expired early, revoked): renew it once. Repeat the call only
        # when a second one is harmless; otherwise its 401 stands and the next attempt, which
        # the engine decides, fetches the new token.
        assert adapter.tokens is not None
        adapter.tokens.discard(token)
        if not repeat_is_safe(op, adapter.idempotency):
            return replace(
                answer, note="; not repeated (no idempotency): the next call gets a new token"
            )
    raise AssertionError("unreachable: the second pass always returns")


def noted(outcome: Outcome | SubscriptionStatus, note: str) -> Outcome | SubscriptionStatus:
    if note and isinstance(outcome, (Failed, Ambiguous, RetryLater)):
        return replace(outcome, detail=outcome.detail + note)
    return outcome


MAX_BODY_BYTES = 1 << 20


def new_session(proxy: str | None) -> requests.Session:
    """A session for one thread: kept-alive connections to the vendor, nothing from the
    environment, no retries; ``proxy`` (the ``proxy`` option) for both schemes when set."""
    session = requests.Session()
    session.trust_env = False
    retries = urllib3.Retry(
        total=0, read=False, redirect=False, status=False, raise_on_status=False
    )
    transport = requests.adapters.HTTPAdapter(
        pool_connections=1, pool_maxsize=2, max_retries=retries
    )
    session.mount("http://", transport)
    session.mount("https://", transport)
    if proxy is not None:
        session.proxies = {"http": proxy, "https": proxy}
    return session


def read_body(response: requests.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(64 * 1024):
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            break  # no answer we understand is this large; the truncated text will not parse
    return bytes(data)


# -- the probe -------------------------------------------------------------------------------------

_NOT_EVIDENCE = (SubscriptionStatus.NOT_FOUND, SubscriptionStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: Literal["ok", "config", "unreachable"]
    detail: str


def probe(adapter: HttpAdapter) -> ProbeResult:
    if adapter.tokens is not None:  # OAuth2: the token first, so that its failure is named
        try:
            adapter.tokens.token()
        except TokenError as exc:
            return ProbeResult("config" if exc.definite else "unreachable", str(exc))
    settings = adapter.settings.probe
    if settings is None:
        return _reachable(adapter)
    if settings.subscription_id is not None:
        return _status_probe(adapter, settings.subscription_id, settings.expect)
    assert settings.path is not None
    return _path_probe(adapter, settings.path)


def _status_probe(
    adapter: HttpAdapter, subscription: str, expect: frozenset[SubscriptionStatus]
) -> ProbeResult:
    # The probe's own request (id, type, status, no asset or product, environment), for a status
    # read of the subscription it names.
    request = CancelRequest(
        "PR-PROBE", "cancel", "pending", "", "", "production", subscription_id=subscription
    )
    call = VendorCall(request=request, subscription_id=subscription, idempotency_key="probe")
    answer = adapter.status(call)
    if isinstance(answer, RetryLater):
        return ProbeResult("unreachable", answer.detail)
    if isinstance(answer, Failed):
        return ProbeResult("config", answer.detail)
    wanted = expect or frozenset(s for s in SubscriptionStatus if s not in _NOT_EVIDENCE)
    if answer in wanted:
        return ProbeResult("ok", f"status read of {subscription}: {answer.value}")
    listed = ", ".join(sorted(s.value for s in wanted))
    return ProbeResult(
        "config", f"status read of {subscription} answered {answer.value}, expected {listed}"
    )


def _path_probe(adapter: HttpAdapter, path: str) -> ProbeResult:
    headers = {"Accept": "application/json", **adapter.settings.headers}
    if adapter.settings.credential is not None:
        headers[adapter.settings.credential.header] = adapter.settings.credential.value
    if adapter.tokens is not None:
        headers["Authorization"] = f"Bearer {adapter.tokens.token()}"
    url = adapter.settings.base_url + path
    try:
        with adapter._session().get(
            url,
            headers=headers,
            timeout=adapter.settings.timeout,
            verify=adapter.settings.verify,
            cert=adapter.settings.client_cert,
            allow_redirects=False,
        ) as answer:
            code, body = answer.status_code, answer.text[:200]
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return ProbeResult(
            "unreachable", adapter._scrub(f"GET {url}: {type(exc).__name__}: {exc}")[:300]
        )
    said = adapter._scrub(f"GET {url}: HTTP {code}; body: {' '.join(body.split()) or '(empty)'}")
    if 200 <= code < 300:
        return ProbeResult("ok", f"GET {url}: HTTP {code}")
    return ProbeResult("unreachable" if code == 429 or code >= 500 else "config", said)


def _reachable(adapter: HttpAdapter) -> ProbeResult:
    url = adapter.settings.base_url + "/"
    try:
        # No credentials: this only asks whether anything answers HTTP at the base URL.
        with adapter._session().get(
            url,
            timeout=adapter.settings.timeout,
            verify=adapter.settings.verify,
            cert=adapter.settings.client_cert,
            allow_redirects=False,
        ) as answer:
            code = answer.status_code
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return ProbeResult(
            "unreachable", adapter._scrub(f"GET {url}: {type(exc).__name__}: {exc}")[:300]
        )
    return ProbeResult(
        "ok", f"{url} answers HTTP ({code}); path and token unchecked: configure options.probe"
    )
