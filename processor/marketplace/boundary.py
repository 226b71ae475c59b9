"""The one way in for Connect's data: every answer passes here before any other code sees it.

:func:`receive` runs on every response the gateway's HTTP sessions get (list pages, reads, action
answers, error bodies; :mod:`processor.marketplace.client` hooks it into the session), before
connect-openapi-client looks at it:

- the body is streamed and read up to :data:`MAX_BODY_BYTES`, counted both as sent (compressed)
  and as decoded (gzip, deflate): a small gzip body that expands to 200 MB is cut at the cap, never
  held whole; and within :data:`MAX_BODY_SECONDS`, however slowly it drips;
- a JSON body (by its ``Content-Type``, as the client decides) is parsed by :func:`parse_json`,
  within the limits of :mod:`processor.json_text` (depth, containers, values, NaN, long integers,
  duplicate keys, UTF-8; a lone surrogate becomes U+FFFD), the same rules a vendor's answer meets;
- ``Content-Range`` is read by :func:`content_range`: anything but ``items <first>-<last>/<total>``
  with digit counts is "unknown" (the header is removed), never an exception.

A 2xx answer that fails raises :class:`Unreadable` (a ``requests`` error, so the client reports it
like a dropped answer; :mod:`processor.marketplace.failures` classifies it ``bad_response``: retried
with backoff, then the pass is deferred with one line). An error answer (4xx, 5xx) that fails keeps
its status and loses its body: its status decides, and an unreadable body says nothing.

The parsed value is kept on the response (:func:`parsed`), so JSON is parsed once, here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from processor import json_text
from processor.json_text import MAX_CONTAINERS, MAX_DEPTH, MAX_INT_DIGITS, MAX_VALUES

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_SECONDS",
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_VALUES",
    "ContentRange",
    "Unreadable",
    "api_error",
    "content_range",
    "parse_json",
    "parsed",
    "read_body",
    "receive",
    "salvage_request_ids",
]

MAX_BODY_BYTES = 16 * 1024 * 1024  # a page of 1,000 real requests is ~10 MB; decoded and as sent
MAX_BODY_SECONDS = 60.0  # a whole body, however slowly it drips
_CHUNK = 64 * 1024
_RANGE = re.compile(r"items ([0-9]{1,15})-([0-9]{1,15})/([0-9]{1,15})")  # ASCII digits only
_ATTRIBUTE = "processor_boundary_value"


class Unreadable(requests.RequestException):
    """A 2xx answer from Connect that cannot be used (too large, not JSON, too deep, ...).
    Its message says why, never quoting the body; ``body`` is the answer when it was read whole
    (for :func:`salvage_request_ids`), None when reading stopped early."""

    body: bytes | None = None


@dataclass(frozen=True)
class ContentRange:
    first: int
    last: int
    count: int


def content_range(value: Any) -> ContentRange | None:
    """``items 0-99/1234`` as numbers; anything else (``NaN``, ``*``, a missing part, a huge or
    negative number) is None: "unknown", never an exception."""
    if not isinstance(value, str):
        return None
    found = _RANGE.fullmatch(value.strip())
    if found is None:
        return None
    first, last, count = (int(g) for g in found.groups())
    return ContentRange(first, last, count)


def read_body(
    response: requests.Response,
    limit: int = MAX_BODY_BYTES,
    *,
    seconds: float = MAX_BODY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> bytearray:
    """The body of a streamed response, at most ``limit`` bytes sent and ``limit`` decoded, read
    within ``seconds`` (the read timeout bounds each socket read, not a body sent a byte at a
    time); raises :class:`Unreadable` past any of them (the connection is closed, the rest never
    read). A body cut short or undecodable raises what requests raises for it (a dropped
    answer)."""
    raw = response.raw
    decoded = bytearray()
    deadline = clock() + seconds
    try:
        for chunk in response.iter_content(_CHUNK):
            decoded += chunk
            sent = raw.tell() if hasattr(raw, "tell") else len(decoded)
            if len(decoded) > limit or sent > limit:
                raise Unreadable(
                    f"the answer is larger than {limit} bytes (sent or decoded); not read further"
                )
            if clock() > deadline:
                raise Unreadable(f"the answer took longer than {seconds:g} s to arrive")
    except BaseException:
        response.close()
        raise
    return decoded


def parse_json(data: bytes | bytearray) -> Any:
    """JSON text as Python values, within the limits of :mod:`processor.json_text`; raises
    :class:`Unreadable` saying why."""
    try:
        return json_text.parse(data)
    except json_text.Refused as refused:
        raise Unreadable(f"the answer is not usable JSON: {refused}") from None


_SALVAGE_BYTES = 1024 * 1024  # a lenient parse of at most this much: a few MB of memory at most
_REQUEST_ID_FIELD = re.compile(rb'"id"\s*:\s*"(PR-[0-9A-Za-z-]{1,64})"')


def salvage_request_ids(body: bytes | None) -> list[str]:
    """The request ids a refused answer of one row may be read for: the ``id`` of its top-level
    object(s), read leniently (NaN and huge numbers as nothing, the last of duplicate keys), when
    the answer is small enough to parse that way; otherwise every distinct ``"id": "PR-..."``
    in its text. Only ever used to name a request the processor then refuses to act on, so a
    wrong guess parks a request, never acts on one; the caller checks the grammar."""
    if not body:
        return []
    if len(body) <= _SALVAGE_BYTES:
        try:
            value = json.loads(
                body.decode("utf-8", "replace"),
                parse_constant=lambda _: None,
                parse_int=lambda _: 0,
                parse_float=lambda _: 0.0,
            )
        except (ValueError, RecursionError):
            value = None
        rows = value if isinstance(value, list) else [value]
        ids = [row.get("id") for row in rows if isinstance(row, dict)]
        if ids:
            return [i for i in ids if isinstance(i, str)]
    return sorted({m.decode("ascii") for m in _REQUEST_ID_FIELD.findall(body)})


def _is_json(response: requests.Response) -> bool:
    # The client's own test: a JSON answer is one whose Content-Type starts so.
    return str(response.headers.get("Content-Type", "")).startswith("application/json")


def receive(response: requests.Response, limit: int = MAX_BODY_BYTES) -> requests.Response:
    """Read, bound and parse one answer (see the module docstring); returns it, body read."""
    success = response.status_code < 400
    body: bytes | bytearray = b""
    try:
        body = read_body(response, limit)
        value = parse_json(body) if _is_json(response) and body.strip() else None
    except Unreadable as refused:
        if success:
            refused.body = bytes(body) if body else None
            raise
        value = None
        response.headers.pop("Content-Type", None)
    # The body is read: requests serves .content, .text and .json() from here on. A JSON body
    # is not kept beside its value (the client reads the value): one copy of a large answer.
    response._content = b"" if value is not None else bytes(body)
    response._content_consumed = True  # type: ignore[attr-defined]
    setattr(response, _ATTRIBUTE, value)
    if content_range(response.headers.get("Content-Range")) is None:
        response.headers.pop("Content-Range", None)  # unknown, for every reader of the header
    return response


def api_error(body: Any) -> dict[str, Any] | None:
    """Connect's error body (``{"error_code": "REQ_005", "errors": ["..."]}``) as the client's
    ``ClientError`` takes it, bounded: a code of at most 100 characters, at most 10 texts of at
    most 500 each; None when the body is not of that shape."""
    if not isinstance(body, dict):
        return None
    code, errors = body.get("error_code"), body.get("errors")
    if not isinstance(code, str) or not isinstance(errors, list):
        return None
    texts = [e[:500] for e in errors[:10] if isinstance(e, str)]
    return {"error_code": code[:100], "errors": texts}


def parsed(response: requests.Response) -> Any:
    """The JSON value :func:`receive` parsed from ``response`` (None when it had none)."""
    return getattr(response, _ATTRIBUTE, None)
