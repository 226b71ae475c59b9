"""What ``cancel-processor check`` asks an ``http`` adapter's vendor before any request is touched.

The option ``probe`` says how (see :class:`~processor.adapters.http_options.ProbeSettings`)::

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import requests
import urllib3

from processor.adapters.base import Failed, RetryLater, SubscriptionStatus, VendorCall
from processor.adapters.http_oauth import TokenError
from processor.model import CancelRequest

if TYPE_CHECKING:
    from processor.adapters.http import HttpAdapter

__all__ = ["ProbeResult", "probe"]

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
    request = CancelRequest(
        id="PR-PROBE",
        type="cancel",
        status="pending",
        asset_id="",
        product_id="",
        environment="production",
        subscription_id=subscription,
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
