"""What a failed Connect call says about its fate: the retry cause, whether the server may have
acted, and how long Connect asked us to wait.

:func:`classify` reads a connect-openapi-client error: no response (connection, timeout), 5xx, a
2xx whose body could not be read, 429 with its ``Retry-After`` (:func:`parse_retry_after`), a TLS
rejection (never sent), or another 4xx. :class:`Failure` carries the verdict; :class:`CallFailed`
carries it through the retry loop (:mod:`processor.marketplace.retry`).
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import requests
from connect.client import ClientError

from processor.marketplace.boundary import Unreadable

__all__ = [
    "BAD_RESPONSE",
    "CLIENT_ERROR",
    "CONNECTION",
    "SERVER_ERROR",
    "THROTTLED",
    "TIMEOUT",
    "TLS",
    "CallFailed",
    "Failure",
    "classify",
    "parse_retry_after",
]

# Retry causes, as reported to on_retry and in logs.
CONNECTION, TIMEOUT, SERVER_ERROR, BAD_RESPONSE, THROTTLED = (
    "connection",
    "timeout",
    "server_error",
    "bad_response",
    "throttled",
)
CLIENT_ERROR = "client_error"
# A TLS failure (certificate not trusted, handshake refused) is transient for the request (it is
# deferred, never refused) but not retried within a call: a certificate does not change in seconds.
TLS = "tls"
_TRANSIENT = frozenset({CONNECTION, TIMEOUT, SERVER_ERROR, BAD_RESPONSE, THROTTLED, TLS})
# The server may have acted on a call that failed this way (a 429 is refused before any work).
_AMBIGUOUS = frozenset({CONNECTION, TIMEOUT, SERVER_ERROR, BAD_RESPONSE})


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified."""

    cause: str
    status_code: int | None = None
    error_code: str | None = None
    errors: tuple[str, ...] = ()
    retry_after: float | None = None  # seconds, from a 429's Retry-After
    sent: bool = True  # False only when the request certainly never reached the server

    @property
    def transient(self) -> bool:
        return self.cause in _TRANSIENT

    @property
    def ambiguous(self) -> bool:
        return self.sent and self.cause in _AMBIGUOUS


class CallFailed(Exception):
    """Internal: an attempt failed; carries the classification through tenacity."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.cause)
        self.failure = failure


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if
    absent or bad."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify(exc: ClientError, now: float) -> Failure:
    """Classify a connect-openapi-client error by what it says about the call's fate."""
    cause_exc = exc.__cause__
    status = exc.status_code
    errors = tuple(str(e) for e in (exc.errors or ()))
    if status is None:
        if not isinstance(cause_exc, requests.RequestException):
            return Failure(CLIENT_ERROR, errors=(str(exc),))
        if isinstance(cause_exc, Unreadable):  # a 2xx the boundary refused: it may have acted
            return Failure(BAD_RESPONSE, errors=(str(cause_exc),))
        if isinstance(cause_exc, requests.exceptions.SSLError):
            return Failure(TLS, sent=False, errors=(_tls_reason(cause_exc),))
        if isinstance(cause_exc, requests.ConnectTimeout):
            return Failure(TIMEOUT, sent=False)
        if isinstance(cause_exc, requests.Timeout):
            return Failure(TIMEOUT)
        return Failure(CONNECTION)
    if status == 429:
        response = getattr(cause_exc, "response", None)
        header = response.headers.get("Retry-After") if response is not None else None
        return Failure(THROTTLED, status, exc.error_code, errors, parse_retry_after(header, now))
    if status >= 500:
        return Failure(SERVER_ERROR, status, exc.error_code, errors)
    if status < 400:
        return Failure(BAD_RESPONSE, status)  # a success whose body could not be read
    return Failure(CLIENT_ERROR, status, exc.error_code, errors)


def _tls_reason(exc: BaseException) -> str:
    """The innermost SSL error's words ("certificate verify failed: self-signed certificate
    ...")."""
    pending, seen = [exc], 0
    while pending and seen < 16:
        err = pending.pop()
        seen += 1
        if isinstance(err, ssl.SSLError):
            return str(getattr(err, "verify_message", None) or err.reason or err)[:200]
        pending.extend(
            a
            for a in (*err.args, getattr(err, "reason", None), err.__cause__)
            if isinstance(a, BaseException)
        )
    return type(exc).__name__
