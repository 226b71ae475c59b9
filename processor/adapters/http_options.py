"""The ``http`` adapter's options, parsed and validated into immutable :class:`HttpSettings`.

What the options mean is documented with the adapter (:mod:`processor.adapters.http`); this
module only reads them. Every problem raises :class:`AdapterError` naming the option's dotted key
and what was expected, including keys nobody reads (typos). Values are echoed in errors, shortened,
except URLs holding credentials. Secrets are read here, once, from the environment variable or file
that ``auth`` names, and kept in :class:`Credential` out of every ``repr``. The pieces it builds on
have modules of their own: reading and checking values (:mod:`.http_values`), templates
(:mod:`.http_templates`), outcome tables and operations (:mod:`.http_outcomes`).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processor.adapters.base import AdapterError, Idempotency, SubscriptionStatus
from processor.adapters.http_oauth import OAuthSettings, oauth_settings
from processor.adapters.http_outcomes import (
    DEFAULT_OUTCOMES,
    DEFAULT_TABLE,
    EVIDENCE_OUTCOMES,
    OUTCOME_NAMES,
    Operation,
    operation,
    outcome_table,
)
from processor.adapters.http_templates import (
    DEFAULT_BODY,
    TEMPLATE_FIELDS,
    Template,
    body_template,
    render_body,
)
from processor.adapters.http_tls import client_cert
from processor.adapters.http_values import (
    CONTROL,
    Options,
    bad,
    checked_url,
    header_name,
    lookup,
    scalar,
    secret_from,
    short,
)
from processor.adapters.rate import RateSettings, rate_settings
from processor.model import MAX_PARAM_CHARS
from processor.observe import secret_forms
from processor.urls import VENDOR_ID, compile_rule

__all__ = [
    "DEFAULT_BODY",
    "DEFAULT_COMMENT_CHARS",
    "DEFAULT_OUTCOMES",
    "DEFAULT_REFUSAL",
    "EVIDENCE_OUTCOMES",
    "OUTCOME_NAMES",
    "TEMPLATE_FIELDS",
    "Credential",
    "HttpSettings",
    "Operation",
    "ProbeSettings",
    "Template",
    "lookup",
    "parse_options",
    "render_body",
    "scalar",
    "short",
]
DEFAULT_COMMENT_CHARS = 1000  # customer text sent to a vendor (processor.model.customer_text)
DEFAULT_REFUSAL = "The vendor declined to cancel this subscription."


@dataclass(frozen=True, slots=True)
class Credential:
    """The header that carries the secret; ``value`` and ``secrets`` stay out of ``repr``."""

    kind: str
    header: str
    value: str = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)  # every form of the secret that could leak


def _credential(raw: Any) -> Credential | None:
    if raw is None:
        return None
    o = Options(raw, "auth.")
    kind = o.choice("type", ("bearer", "basic", "header", "oauth2", "none"))
    header = header_name(o.text("header"), "auth.header") if kind == "header" else "Authorization"
    username = o.text("username") if kind == "basic" else ""
    env, path = (o.text("env", None), o.text("file", None)) if kind != "none" else (None, None)
    o.done()
    if kind == "none":
        return None
    if (env is None) == (path is None):
        raise AdapterError(
            "option 'auth': give exactly one of env (a variable's name) or file (a path)"
        )
    secret = secret_from(env, path)
    if kind == "basic":
        token = base64.b64encode(f"{username}:{secret}".encode()).decode()
        value = f"Basic {token}"
    else:
        value = f"Bearer {secret}" if kind == "bearer" else secret
    # Every form the secret could leak in (raw, base64, URL-encoded...), derived once.
    forms = sorted({*secret_forms(value), *secret_forms(secret)}, key=len, reverse=True)
    return Credential(kind, header, value, tuple(forms) or (secret,))


def _static_headers(raw: Any, reserved: set[str]) -> dict[str, str]:
    headers = {}
    for name, value in Options(raw, "headers.").data.items():
        key = f"headers.{name}"
        header_name(str(name), key)
        if str(name).lower() in reserved:
            raise AdapterError(
                f"option '{key}': set by the adapter (see auth and idempotency_header)"
            )
        if not isinstance(value, str) or CONTROL.search(value):
            raise bad(key, "a one-line string", value)
        headers[str(name)] = value
    return headers


def _verify(value: Any) -> bool | str:
    if value is True:
        return True
    if value is False:
        raise AdapterError(
            "option 'verify': TLS verification cannot be turned off; give a CA bundle's path"
        )
    if isinstance(value, str) and os.path.isfile(value):
        return value
    raise bad("verify", "true or the path of an existing CA bundle file", value)


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """``probe``: what ``cancel-processor check`` asks the vendor (:mod:`.http_probe`)."""

    subscription_id: str | None = None  # a status read of this known subscription
    expect: frozenset[SubscriptionStatus] = (
        frozenset()
    )  # the statuses it may answer (empty: any known)
    path: str | None = None  # or GET this path (a health endpoint); a 2xx answers


def _probe(raw: Any, has_status: bool) -> ProbeSettings | None:
    if raw is None:
        return None
    o = Options(raw, "probe.")
    subscription, path = o.text("subscription_id", None), o.text("path", None)
    listed = o.get("expect", [])
    o.done()
    if (subscription is None) == (path is None):
        raise AdapterError(
            "option 'probe': give exactly one of subscription_id (a status read) or path"
        )
    if path is not None and not path.startswith("/"):
        raise bad("probe.path", "a path starting with '/'", path)
    if subscription is not None and not has_status:
        raise AdapterError(
            "option 'probe.subscription_id': a status read probe needs the status operation"
        )
    expect = set()
    for value in listed if isinstance(listed, list) else [listed]:
        try:
            expect.add(SubscriptionStatus(value))
        except ValueError:
            raise bad("probe.expect", "subscription statuses", value) from None
    return ProbeSettings(subscription, frozenset(expect), path)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Everything :class:`~processor.adapters.http.HttpAdapter` needs, validated."""

    base_url: str  # without a trailing slash
    idempotency: Idempotency
    idempotency_header: str
    credential: Credential | None
    headers: Mapping[str, str]
    timeout: tuple[float, float]  # (connect, read)
    verify: bool | str
    proxy: str | None
    refusal_field: str
    refusal_default: str
    max_retry_after: float
    operations: Mapping[str, Operation]  # terminate always; suspend, purge, status when configured
    probe: ProbeSettings | None = None
    oauth: OAuthSettings | None = None  # auth type oauth2 (then credential is None)
    client_cert: tuple[str, str] | None = None  # tls: (cert, key) files
    rate: RateSettings | None = None
    # The rule a subscription id must match before any call (processor.urls.VENDOR_ID unless the
    # option subscription_id_pattern says otherwise), and the cut of customer text sent.
    subscription_rule: re.Pattern[str] = VENDOR_ID
    max_comment_chars: int = DEFAULT_COMMENT_CHARS


def _subscription_rule(raw: Any) -> re.Pattern[str]:
    if raw is None:
        return VENDOR_ID
    if not isinstance(raw, str) or not raw.strip():
        raise bad("subscription_id_pattern", "a regular expression (a non-empty string)", raw)
    try:
        return compile_rule(raw)
    except (re.error, ValueError) as exc:
        raise AdapterError(
            f"option 'subscription_id_pattern': not a usable regular expression ({exc})"
        ) from None


def _comment_chars(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_PARAM_CHARS:
        raise bad("max_comment_chars", f"a whole number from 1 to {MAX_PARAM_CHARS}", raw)
    return raw


def parse_options(options: Mapping[str, Any]) -> HttpSettings:
    """Validate the adapter's options (see :mod:`processor.adapters.http`); raises AdapterError."""
    o = Options(options)
    base_url = checked_url(o.text("base_url"), "base_url").rstrip("/")
    idempotency = Idempotency(o.choice("idempotency", tuple(i.value for i in Idempotency), "none"))
    key_header = header_name(o.text("idempotency_header", "Idempotency-Key"), "idempotency_header")
    auth = o.get("auth", None)
    oauth = oauth_settings(auth) if _is_oauth(auth) else None
    credential = None if oauth else _credential(auth)
    headers = _static_headers(o.get("headers", {}), {key_header.lower(), "authorization"})
    timeout = o.get("timeout", {})
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = {"connect": timeout, "read": timeout}
    t = Options(timeout, "timeout.")
    # The read stays under the default processing.shutdown_timeout (30 s): a stop never waits it
    # out.
    timeouts = (t.seconds("connect", 5.0), t.seconds("read", 20.0))
    t.done()
    verify = _verify(o.get("verify", True))
    proxy = o.text("proxy", None)
    r = Options(o.get("refusal", {}), "refusal.")
    refusal = (r.text("field", "message"), r.text("default", DEFAULT_REFUSAL))
    r.done()
    max_retry_after = o.seconds("max_retry_after", 3600.0)
    o.get("body", None)  # marks it read: an explicit null means "send no body"
    body = body_template(o.data.get("body", DEFAULT_BODY), "body")
    table = outcome_table(o.get("outcomes", {}), "outcomes", DEFAULT_TABLE)
    operations = {"terminate": operation("terminate", o.get("terminate", True), body, table)}
    for name in ("suspend", "purge", "status"):
        if (raw := o.get(name, False)) is not False:
            operations[name] = operation(name, raw, body, table)
    probe = _probe(o.get("probe", None), "status" in operations)
    client = client_cert(o.get("tls", None))
    rate = rate_settings(o.get("rate", None))
    subscription_rule = _subscription_rule(o.get("subscription_id_pattern", None))
    comment_chars = _comment_chars(o.get("max_comment_chars", DEFAULT_COMMENT_CHARS))
    o.done()
    return HttpSettings(
        base_url=base_url,
        idempotency=idempotency,
        idempotency_header=key_header,
        credential=credential,
        headers=headers,
        timeout=timeouts,
        verify=verify,
        proxy=None if proxy is None else checked_url(proxy, "proxy"),
        refusal_field=refusal[0],
        refusal_default=refusal[1],
        max_retry_after=max_retry_after,
        operations=operations,
        probe=probe,
        oauth=oauth,
        client_cert=client,
        rate=rate,
        subscription_rule=subscription_rule,
        max_comment_chars=comment_chars,
    )


def _is_oauth(auth: Any) -> bool:
    return isinstance(auth, Mapping) and auth.get("type") == "oauth2"
