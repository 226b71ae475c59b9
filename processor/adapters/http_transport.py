"""The ``http`` adapter's transport: one session per calling thread, bodies read within a limit,
and what a failed call proves about whether anything was sent.

Sessions do exactly what the options say: no proxy, CA bundle or ``.netrc`` credentials (which
would replace the Authorization header) from the environment, no retries (the engine owns them,
with the journal and the same idempotency key), no redirects followed (the adapter asks for none).
"""

from __future__ import annotations

import ssl
from typing import Any

import requests
import urllib3

from processor import json_text

__all__ = [
    "MAX_BODY_BYTES",
    "UNBUILDABLE",
    "new_session",
    "parse_json",
    "read_body",
    "tls_failure",
    "unsent",
]

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


def read_body(response: requests.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(64 * 1024):
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            break  # no answer we understand is this large; the truncated text will not parse
    return bytes(data)


def parse_json(raw: bytes) -> Any:
    """A vendor's answer as JSON values, read by the rules every answer from outside meets
    (:mod:`processor.json_text`: no NaN, no duplicate keys, nesting and size bounded, lone
    surrogates replaced); anything else is no JSON, and the status code decides alone."""
    try:
        return json_text.parse(raw) if raw.strip() else None
    except json_text.Refused:
        return None
