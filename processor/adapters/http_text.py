"""How the ``http`` adapter puts what a vendor said into words: outcome details, the start of a
body for an error message, a customer-facing refusal reason, and a ``Retry-After`` header as
seconds. (Which values may go into a URL path is :mod:`processor.urls`'s to say.)"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from processor.adapters.http_values import lookup

__all__ = [
    "MAX_REASON_CHARS",
    "body_text",
    "customer_reason",
    "detail",
    "retry_after_seconds",
]

MAX_REASON_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


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


def detail(operation: str, code: int, body: Any, headers: Mapping[str, str]) -> str:
    """``terminate: HTTP 409 already_terminated (replayed)``: the call, the code, the body's
    error."""
    text = f"{operation}: HTTP {code}"
    error = next(
        (v for v in (lookup(body, "error"), lookup(body, "code")) if isinstance(v, str) and v),
        None,
    )
    if error:
        text += " " + _CONTROL.sub(" ", error)[:80]
    if headers.get("Idempotent-Replayed", "").lower() == "true":
        text += " (replayed)"
    return text


def body_text(raw: bytes, limit: int = 200) -> str:
    """The start of an answer's body, on one line, for an error message."""
    text = _CONTROL.sub(" ", raw[: limit * 4].decode("utf-8", "replace")).strip()
    if not text:
        return "(empty)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def customer_reason(value: Any, default: str) -> str:
    """The vendor's words for the customer: one line, printable, at most 500 characters."""
    text = " ".join(_CONTROL.sub(" ", value).split()) if isinstance(value, str) else ""
    if not text:
        return default
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1].rstrip() + "…"
