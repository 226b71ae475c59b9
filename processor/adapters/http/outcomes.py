"""What a vendor's answers mean: each answer, or failed call, of the ``http`` adapter as an outcome.

A status code is looked up exactly, then by range (``4xx``), in the operation's ``outcomes`` table
(read at start-up by :mod:`.settings`); an entry is an outcome name
(:data:`~.settings.OUTCOME_NAMES`) or a list of rules matched against the JSON body, first match
wins. Defaults: 2xx success, 429 and 503 retry_later, other 5xx ambiguous, everything else failed
(a definite error, counted toward ``processing.max_attempts``, then parked by default), with a
detail naming the method, the URL template, the status and the start of the body. No status code
alone ends a request: ``already_gone`` and ``refused`` (and ``success`` outside 2xx) need a
``when`` condition on the body, checked at start-up; a bare 404 may be a mistyped path. The mock
vendor's map is :data:`cancel_sandbox.vendor.outcomes.MOCK_VENDOR_OUTCOMES`. A transport failure
that proves nothing was sent (refused, DNS, connect timeout, certificate rejected) is
:class:`RetryLater`; one after the request may have left (read timeout, reset, dropped mid-answer)
is :class:`Ambiguous`. So is a 2xx whose body fails the success check (not JSON, or the wrong
status): the vendor got the call and may have acted but did not confirm it, so the engine confirms
(same key again, or a status read) or parks the request. It never approves on nonsense and never
repeats blindly. ``success_field: null`` accepts any 2xx (a vendor answering 204). A status read
changes nothing, so its uncertain outcomes are :class:`RetryLater`.

A client certificate the vendor refuses ends the handshake with an alert: that proves nothing was
acted upon, and trying again will not get the certificate accepted, so it is a definite error
naming the option (:func:`client_cert_refused`).

Answers are put into words here too: a detail names the call, the code and the body's error, on
one line, with every secret scrubbed; a refusal's customer-facing reason is one printable line of
at most :data:`MAX_REASON_CHARS`; ``Retry-After`` (seconds or an HTTP-date) is capped by
``max_retry_after``. (Which values may go into a URL path is :mod:`processor.urls`'s to say.)
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3

from processor import json_text
from processor.adapters.base import (
    AlreadyGone,
    Ambiguous,
    Failed,
    Outcome,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
)
from processor.adapters.http.settings import CONTROL, HttpSettings, Operation, lookup, scalar, short

__all__ = [
    "MAX_REASON_CHARS",
    "UNBUILDABLE",
    "answer_outcome",
    "body_text",
    "client_cert_refused",
    "customer_reason",
    "describe",
    "failure_outcome",
    "parse_json",
    "retry_after_seconds",
    "tls_failure",
    "unsent",
]

MAX_REASON_CHARS = 500
Scrub = Callable[[str], str]  # the adapter's: every secret it knows masked in a text

# -- answers ---------------------------------------------------------------------------------------


def answer_outcome(
    op: Operation,
    code: int,
    headers: Mapping[str, str],
    raw: bytes,
    settings: HttpSettings,
    scrub: Scrub,
) -> Outcome | SubscriptionStatus:
    """What the vendor's answer to ``op`` means (see the module docstring)."""
    body = parse_json(raw)
    outcome = op.outcome_for(code, body)
    detail = scrub(describe(op.name, code, body, headers))
    # A status read changes nothing, so its "may have acted" is only "ask again".
    if outcome == "retry_later" or (outcome == "ambiguous" and op.statuses is not None):
        after = retry_after_seconds(headers.get("Retry-After"), cap=settings.max_retry_after)
        return RetryLater(detail, after=after)
    if outcome == "failed":
        # A definite error is read by a person: say which call, what came back, and why it
        # decides nothing (a mistyped path answers 404, a token without the scope 403).
        detail = scrub(
            f"{detail} from {op.method} {settings.base_url}{op.path.text}; body: {body_text(raw)}"
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
        reason = lookup(body, settings.refusal_field)
        return Refused(scrub(customer_reason(reason, settings.refusal_default)))
    if outcome == "ambiguous":
        return Ambiguous(f"{detail}; the vendor may have acted")
    return Failed(detail)


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


# -- failed calls ----------------------------------------------------------------------------------


def failure_outcome(op: Operation, exc: Exception, scrub: Scrub) -> Outcome:
    """What a call that raised ``exc`` instead of answering means: whether anything was sent."""
    what = scrub(f"{type(exc).__name__}: {exc}")[:300]
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
            f"{op.name}: TLS verification failed ({scrub(tls)[:200]}); nothing was sent. "
            "To trust a private CA, set the adapter option verify to its CA bundle file"
        )
    if unsent(exc):
        return RetryLater(f"{op.name}: could not connect; nothing was sent ({what})")
    if op.statuses is not None:  # a status read changes nothing: asking again is always safe
        return RetryLater(f"{op.name}: no whole answer ({what})")
    return Ambiguous(f"{op.name}: the request was sent but no whole answer came back ({what})")


# Raised while preparing a request, before anything is sent; each means a configuration problem.
UNBUILDABLE = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidJSONError,
)


def tls_failure(exc: BaseException) -> str | None:
    """The certificate error's words when ``exc`` is (or wraps) a rejected certificate, else
    None."""
    pending, seen = [exc], 0
    while pending and seen < 16:
        err = pending.pop()
        seen += 1
        if isinstance(err, ssl.SSLCertVerificationError):
            return str(getattr(err, "verify_message", None) or getattr(err, "reason", None) or err)
        links = (*err.args, getattr(err, "reason", None), err.__cause__)
        pending.extend(link for link in links if isinstance(link, BaseException))
    return None


def unsent(exc: BaseException) -> bool:
    """True when the error proves that no byte of the request left: connect phase or TLS rejection.

    Follows the explicit links requests and urllib3 leave (args, ``reason``, ``__cause__``), never
    ``__context__``, which can hold an unrelated earlier error. Unsure means sent.
    """
    pending, seen = [exc], set[int]()
    while pending and len(seen) < 16:
        err = pending.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        # NewConnectionError (refused) and NameResolutionError (DNS) are ConnectTimeoutErrors too.
        if isinstance(
            err,
            (
                requests.exceptions.ConnectTimeout,
                urllib3.exceptions.ConnectTimeoutError,
                ssl.SSLCertVerificationError,
            ),
        ):
            return True
        links = (*err.args, getattr(err, "reason", None), err.__cause__)
        pending.extend(link for link in links if isinstance(link, BaseException))
    return False


# OpenSSL's reasons for a server's alert about the client's certificate.
_REFUSED = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def client_cert_refused(exc: BaseException) -> str | None:
    """The alert's reason when the vendor refused our client certificate, else None."""
    pending, seen = [exc], 0
    while pending and seen < 16:
        err = pending.pop()
        seen += 1
        if isinstance(err, ssl.SSLError) and not isinstance(err, ssl.SSLCertVerificationError):
            reason = str(getattr(err, "reason", None) or "")
            if any(word in reason for word in _REFUSED):
                return reason
        links = (*err.args, getattr(err, "reason", None), err.__cause__)
        pending.extend(link for link in links if isinstance(link, BaseException))
    return None


# -- reading an answer, in words -------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    """A vendor's answer as JSON values, read by the rules every answer from outside meets
    (:mod:`processor.json_text`: no NaN, no duplicate keys, nesting and size bounded, lone
    surrogates replaced); anything else is no JSON, and the status code decides alone."""
    try:
        return json_text.parse(raw) if raw.strip() else None
    except json_text.Refused:
        return None


def retry_after_seconds(
    value: str | None, *, cap: float = 3600.0, now: datetime | None = None
) -> float | None:
    """``Retry-After`` (delay-seconds or HTTP-date) as seconds in ``[0, cap]``; None if unusable."""
    text = (value or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), cap)


def describe(operation: str, code: int, body: Any, headers: Mapping[str, str]) -> str:
    """``terminate: HTTP 409 already_terminated (replayed)``: the call, the code, the body's
    error."""
    text = f"{operation}: HTTP {code}"
    error = next(
        (v for v in (lookup(body, "error"), lookup(body, "code")) if isinstance(v, str) and v),
        None,
    )
    if error:
        text += " " + CONTROL.sub(" ", error)[:80]
    if headers.get("Idempotent-Replayed", "").lower() == "true":
        text += " (replayed)"
    return text


def body_text(raw: bytes, limit: int = 200) -> str:
    """The start of an answer's body, on one line, for an error message."""
    text = CONTROL.sub(" ", raw[: limit * 4].decode("utf-8", "replace")).strip()
    if not text:
        return "(empty)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def customer_reason(value: Any, default: str) -> str:
    """The vendor's words for the customer: one line, printable, at most 500 characters."""
    text = " ".join(CONTROL.sub(" ", value).split()) if isinstance(value, str) else ""
    if not text:
        return default
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1].rstrip() + "…"
