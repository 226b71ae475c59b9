"""The ``http`` adapter's options: read once at start-up, checked, kept as :class:`HttpSettings`.

``HttpAdapter(options)`` validates every option at start-up (unknown keys included, so a typo is
caught) and raises :class:`AdapterError` naming the option's dotted key and what was expected.
Values are echoed in errors shortened, with control characters blanked; a URL holding credentials
is never echoed. Secrets are read here, once, from the environment variable or file that ``auth``
names, and kept out of every ``repr``. The default paths are the local mock vendor's
(``/v1/subscriptions/{subscription_id}/terminate``); the default outcome map names no vendor's
error codes (what answers mean: :mod:`.outcomes`). A null option means its default, except
for ``body`` and ``success_field``, where null means none (no body, no success check)::

    base_url: https://vendor.example.com      # http or https; may carry a path prefix
    idempotency: key                          # key | natural | none (default none: the safe guess)
    idempotency_header: Idempotency-Key       # sent on mutations, in key mode only
    auth: {type: bearer, env: VENDOR_TOKEN}   # bearer | basic (+username) | header (+header)
                                              # | oauth2 (token_url, client_id, ...: see
                                              # processor.adapters.http.oauth) | none; the
                                              # secret comes from env: or file: only
    tls: {cert: client.pem, key: client.key}  # a client certificate (mTLS: see below)
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
                      # terminate, suspend, purge: async: {status: 202, operation_id: id, poll:
                      # "/v1/operations/{operation_id}", done: [...], failed: [...], pending:
                      # [...], every: 5, give_up: 3600} or {location: true, ...}: a 202 is an
                      # operation to poll (processor.adapters.http.operations)
    status: true      # {method: GET, path: "/v1/subscriptions/{subscription_id}", field: status,
                      #  values: {cancelled: terminated}}; absent: the adapter has no status()
    probe: {subscription_id: SUB-KNOWN, expect: [active]}  # or {path: /healthz}: what
                      # cancel-processor check asks (see processor.adapters.http.call)

Templates (paths and body strings) name fields in braces: :data:`TEMPLATE_FIELDS` and
``params.<parameter id>``, checked once at start-up and rendered per call; an unknown field, a
format spec or a conversion is a start-up error. Path values go through
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

Client certificates (mutual TLS). ``tls: {cert, key}`` names two PEM files: the client certificate
(and chain) and its private key, unencrypted. Both are read at start-up (so ``cancel-processor
check`` and ``run`` refuse a missing or unreadable file, naming the option and the file) and loaded
together into a TLS context, which proves they are PEM and that the key belongs to the
certificate. An encrypted key is refused: nothing could type its passphrase. The pair is sent to
the vendor and to an OAuth2 token endpoint when either asks for it during the handshake.
"""

from __future__ import annotations

import base64
import math
import os
import re
import ssl
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from processor.adapters.base import AdapterError, Idempotency, SubscriptionStatus
from processor.adapters.http.operations import AsyncSpec, async_spec
from processor.adapters.rate import RateSettings, rate_settings
from processor.model import MAX_PARAM_CHARS
from processor.observe import register_secret, secret_forms
from processor.urls import VENDOR_ID, compile_rule

__all__ = [
    "CONTROL",
    "DEFAULT_BODY",
    "DEFAULT_COMMENT_CHARS",
    "DEFAULT_OUTCOMES",
    "DEFAULT_REFUSAL",
    "DEFAULT_TABLE",
    "EVIDENCE_OUTCOMES",
    "METHODS",
    "MISSING",
    "OUTCOME_NAMES",
    "TEMPLATE_FIELDS",
    "Credential",
    "HttpSettings",
    "OAuthSettings",
    "Operation",
    "Options",
    "ProbeSettings",
    "Rule",
    "Table",
    "Template",
    "bad",
    "body_template",
    "checked_url",
    "client_cert",
    "header_name",
    "lookup",
    "oauth_settings",
    "operation",
    "outcome_table",
    "parse_options",
    "render_body",
    "scalar",
    "secret_from",
    "short",
]

# -- reading values --------------------------------------------------------------------------------

MISSING: Any = object()
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name


class Options:
    """One mapping of options; remembers which keys were read so that the rest can be rejected."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise bad(path.rstrip(".") or "options", "a mapping", data)
        self.data, self.path, self._read = data, path, set[str]()

    def key(self, name: str) -> str:
        return self.path + name

    def get(self, name: str, default: Any = MISSING) -> Any:
        self._read.add(name)
        if self.data.get(name) is not None:
            return self.data[name]
        if default is MISSING:
            raise AdapterError(f"option '{self.key(name)}': required")
        return default

    def text(self, name: str, default: Any = MISSING) -> Any:
        value = self.get(name, default)
        if value is not default and (not isinstance(value, str) or not value.strip()):
            raise bad(self.key(name), "a non-empty string", value)
        return value

    def choice(
        self, name: str, choices: tuple[str, ...], default: Any = MISSING, upper: bool = False
    ) -> str:
        value = self.get(name, default)
        normal = value.upper() if upper and isinstance(value, str) else value
        if normal not in choices:
            raise bad(self.key(name), "one of " + ", ".join(choices), value)
        return str(normal)

    def seconds(self, name: str, default: float) -> float:
        value = self.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < math.inf
        ):
            raise bad(self.key(name), "a positive number of seconds", value)
        return float(value)

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self._read)
        if unknown:
            known = ", ".join(sorted(self._read))
            raise AdapterError(
                f"option '{self.key(unknown[0])}': unknown option; expected one of {known}"
            )


def bad(key: str, expected: str, got: Any) -> AdapterError:
    return AdapterError(f"option '{key}': expected {expected}, got {short(got, 60)}")


def checked_url(text: str, key: str) -> str:
    try:
        parts = urlsplit(text)
        has_credentials, host = bool(parts.username or parts.password), parts.hostname
    except ValueError:
        raise AdapterError(f"option '{key}': not a valid URL") from None
    if has_credentials:  # checked first, and the URL is not echoed: it holds a secret
        raise AdapterError(
            f"option '{key}': credentials in the URL are not allowed; use auth (env or file)"
        )
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise bad(key, "a http or https URL without query or fragment", text)
    return text


def header_name(name: str, key: str) -> str:
    if not TOKEN.fullmatch(name):
        raise bad(key, "an HTTP header name", name)
    return name


def lookup(body: Any, path: str) -> Any:
    """``"error.code"`` in a JSON body; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(body, Mapping):
            return None
        body = body.get(part)
    return body


def scalar(value: Any) -> str | None:
    """A JSON scalar as text to compare (booleans as in JSON); None if absent or structured."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (Mapping, list)):
        return None
    return str(value)


def short(value: Any, limit: int = 80) -> str:
    text = CONTROL.sub(" ", repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def secret_from(env: str | None, path: str | None) -> str:
    """The secret in the environment variable ``env`` or the file ``path`` (``auth.env`` or
    ``auth.file``); errors name where it was looked for, never its value."""
    if env is not None:
        where, secret = (
            f"auth.env': the environment variable {env}",
            os.environ.get(env, "").strip(),
        )
    else:
        where = f"auth.file': the file {path}"
        try:
            with open(str(path), encoding="utf-8") as handle:
                secret = handle.read().strip()
        except (OSError, UnicodeError) as exc:  # never str(exc): a decode error quotes the bytes
            problem = getattr(exc, "strerror", None) or type(exc).__name__
            raise AdapterError(f"option '{where} cannot be read ({problem})") from None
    if not secret:
        raise AdapterError(f"option '{where} is not set or is empty")
    if CONTROL.search(secret):
        raise AdapterError(f"option '{where} holds a control character (a line break?)")
    return secret


# -- templates -------------------------------------------------------------------------------------

# fmt: off
TEMPLATE_FIELDS = (
    "subscription_id", "request_id", "asset_id", "product_id", "marketplace_id", "environment",
    "customer_id", "external_id", "idempotency_key", "reason_code", "reason_comment",
)
DEFAULT_BODY = {"request_id": "{request_id}", "reason_code": "{reason_code}",
                "comment": "{reason_comment}"}
# fmt: on


class Template:
    """``"/v1/subscriptions/{subscription_id}"``: literal text and field names, checked once."""

    def __init__(self, text: str, key: str) -> None:
        self.text, self.parts = text, list[tuple[str, str | None]]()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise AdapterError(f"option '{key}': bad template {text!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (spec or conversion):
                raise AdapterError(
                    f"option '{key}': '{{{name}}}' takes no format spec or conversion"
                )
            if (
                name is not None
                and name not in TEMPLATE_FIELDS
                and not re.fullmatch(r"params\.[^.\[\]]+", name)
            ):
                known = ", ".join(TEMPLATE_FIELDS)
                raise AdapterError(
                    f"option '{key}': unknown field '{{{name}}}'; known: {known}, params.<id>"
                )
            self.parts.append((literal, name))

    def render(self, fields: Mapping[str, str], escape: Callable[[str], str] = str) -> str:
        return "".join(
            text + (escape(fields.get(name, "")) if name else "") for text, name in self.parts
        )

    def render_path(self, fields: Mapping[str, str], segment: Callable[[str, str], str]) -> str:
        """The URL: each field before a ``?`` through ``segment(name, value)`` (checked for its
        kind and encoded as one path segment, :func:`processor.urls.segment`), the ones after it
        percent-encoded as query values."""
        out, query = [], False
        for text, name in self.parts:
            query = query or "?" in text
            out.append(text)
            if name is not None:
                value = fields.get(name, "")
                out.append(quote(value, safe="") if query else segment(name, value))
        return "".join(out)

    def fields(self) -> list[str]:
        return [name for _, name in self.parts if name is not None]

    def path_fields(self) -> list[str]:
        """The fields before a ``?``: the ones whose value could change which resource is called."""
        found: list[str] = []
        for literal, name in self.parts:
            if "?" in literal:
                break
            if name is not None:
                found.append(name)
        return found


def body_template(value: Any, key: str) -> Any:
    """A JSON body whose strings may be templates; nested objects and arrays are allowed."""
    if isinstance(value, str):
        return Template(value, key)
    if isinstance(value, Mapping):
        return {str(k): body_template(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [body_template(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise bad(key, "JSON values", value)


def render_body(template: Any, fields: Mapping[str, str]) -> Any:
    """The JSON body for one call; object keys whose value renders empty are left out."""
    if isinstance(template, Template):
        return template.render(fields)
    if isinstance(template, dict):
        rendered = {k: render_body(v, fields) for k, v in template.items()}
        return {k: v for k, v in rendered.items() if v != ""}  # no comment is better than ""
    if isinstance(template, list):
        return [render_body(v, fields) for v in template]
    return template


# -- outcome tables and the operations that carry them ---------------------------------------------
# Read here, applied to each answer by .outcomes (whose docstring says what they mean and why).

# fmt: off
OUTCOME_NAMES = ("success", "already_gone", "refused", "retry_later", "ambiguous", "failed")
METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
# Written as options, so that the defaults pass the same validation as what an operator writes.
# Safe for a vendor we have never seen: no status code alone ends a request. A 404 may be a
# mistyped path, a 403 a token without the right scope, a 400 or 422 a validation bug on either
# side; each is a definite error (counted toward processing.max_attempts, then parked by default).
# "Gone" and "refused" need a body the operator names under outcomes (see the mock vendor's map in
# cancel_sandbox.vendor.outcomes and config/processor.example.yaml), or a status read.
DEFAULT_OUTCOMES: dict[str, Any] = {
    "1xx": "failed",
    "2xx": "success",
    "3xx": "failed",  # redirects are not followed: a moved API is a configuration error
    "429": "retry_later",
    "4xx": "failed",
    "503": "retry_later",
    "5xx": "ambiguous",  # 500, 502, 504: the vendor (or a proxy in front of it) may have acted
}
# Outcomes the customer sees (approve after "gone", refuse): never from a status code alone.
EVIDENCE_OUTCOMES = ("already_gone", "refused")
_SUCCESS_VALUES = {"terminate": ["terminated", "purged"], "suspend": ["suspended"],
                   "purge": ["purged"]}
# fmt: on


@dataclass(frozen=True, slots=True)
class Rule:
    """``outcome`` when each ``when`` key path of the JSON body holds one of its values."""

    outcome: str
    when: tuple[tuple[str, frozenset[str | None]], ...] = ()

    def matches(self, body: Any) -> bool:
        return all(scalar(lookup(body, path)) in values for path, values in self.when)


Table = Mapping[str, tuple[Rule, ...]]


def outcome_table(raw: Any, key: str, base: Table) -> dict[str, tuple[Rule, ...]]:
    """``base`` with the entries of ``raw`` replacing it code by code.

    A rule that ends a request needs a body condition: ``already_gone`` and ``refused`` always,
    ``success`` outside 2xx. A bare ``"404": already_gone`` is how a mistyped path approved every
    cancellation; it is refused at start-up, naming the key.
    """
    table = dict(base)
    for code, spec in Options(raw, key + ".").data.items():
        code = str(code).lower()
        if not re.fullmatch(r"[1-5]([0-9]{2}|xx)", code):
            raise bad(f"{key}.{code}", "a status code like 404 or a range like 4xx", code)
        items = spec if isinstance(spec, list) else [spec]
        table[code] = tuple(_rule(item, f"{key}.{code}[{i}]") for i, item in enumerate(items))
        for i, rule in enumerate(table[code]):
            final = rule.outcome in EVIDENCE_OUTCOMES or (
                rule.outcome == "success" and code[0] != "2"
            )
            # null matches a body without the field, an empty list nothing: neither is evidence
            if final and (not rule.when or any(None in v or not v for _, v in rule.when)):
                raise AdapterError(
                    f"option '{key}.{code}[{i}]': {rule.outcome} from a status code alone is not "
                    f"evidence; add when: {{<body field>: <value the vendor sends>}}"
                )
    return table


def _rule(item: Any, key: str) -> Rule:
    o = Options({"outcome": item} if isinstance(item, str) else item, key + ".")
    outcome = o.choice("outcome", OUTCOME_NAMES)
    when = []
    for path, values in Options(o.get("when", {}), key + ".when.").data.items():
        listed = values if isinstance(values, list) else [values]
        when.append((str(path), frozenset(scalar(v) for v in listed)))
    o.done()
    return Rule(outcome, tuple(when))


@dataclass(frozen=True, slots=True)
class Operation:
    """One configured vendor call: terminate, suspend, purge or the status read."""

    name: str
    method: str
    path: Template
    body: Any  # a body template, or None: no body
    outcomes: Table
    key_path: str | None  # success_field of an action (None: any 2xx), the status field of a read
    accept: frozenset[str | None] = frozenset()  # success_values
    statuses: Mapping[str, SubscriptionStatus] | None = None  # set for the status read only
    # An asynchronous vendor: how its acceptance (202) looks and how to poll it (the option
    # ``async``, processor.adapters.http.operations); None: every 2xx is read as the step done.
    accepts: AsyncSpec | None = None

    def outcome_for(self, code: int, body: Any) -> str:
        for key in (str(code), f"{code // 100}xx"):
            for rule in self.outcomes.get(key, ()):
                if rule.matches(body):
                    return rule.outcome
        return "ambiguous" if code >= 500 else "failed"


def operation(name: str, raw: Any, body: Any, outcomes: Table) -> Operation:
    o = Options({} if raw is True else raw, name + ".")
    method = o.choice("method", METHODS, "GET" if name == "status" else "POST", upper=True)
    suffix = "" if name == "status" else "/" + name
    path = Template(o.text("path", "/v1/subscriptions/{subscription_id}" + suffix), o.key("path"))
    if not path.text.startswith("/"):
        raise bad(o.key("path"), "a path starting with '/'", path.text)
    if "body" in o.data:
        body = body_template(o.get("body", None), o.key("body"))
    table = outcome_table(o.get("outcomes", {}), o.key("outcomes"), outcomes)
    if name == "status":
        statuses: dict[str, SubscriptionStatus] = {
            s.value: s for s in SubscriptionStatus if s is not SubscriptionStatus.UNKNOWN
        }
        for vendor, ours in Options(o.get("values", {}), o.key("values.")).data.items():
            try:
                statuses[str(vendor)] = SubscriptionStatus(ours)
            except ValueError:
                raise bad(o.key(f"values.{vendor}"), "a subscription status", ours) from None
        op = Operation(
            name, method, path, None, table, o.text("field", "status"), statuses=statuses
        )
    else:
        o.get("success_field", None)  # marks it read: an explicit null turns the check off
        key_path = o.data.get("success_field", "status")
        if key_path is not None and not (isinstance(key_path, str) and key_path):
            raise bad(o.key("success_field"), "a key path or null", key_path)
        values = o.get("success_values", _SUCCESS_VALUES[name])
        accept = frozenset(scalar(v) for v in (values if isinstance(values, list) else [values]))
        raw_async = o.get("async", None)
        accepts = None if raw_async is None else async_spec(raw_async, o.key("async"), Options)
        op = Operation(
            name,
            method,
            path,
            None if method == "GET" else body,
            table,
            key_path,
            accept,
            accepts=accepts,
        )
    o.done()
    return op


# Built last: it needs the helpers above, and validates the defaults like any configuration.
DEFAULT_TABLE = outcome_table(DEFAULT_OUTCOMES, "outcomes", {})


# -- credentials: auth and tls ---------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    token_url: str
    client_id: str
    secret: str = field(repr=False)
    scope: str | None
    audience: str | None
    client_auth: str  # authlib's name: client_secret_basic | client_secret_post
    renew_before: float


def oauth_settings(raw: Any) -> OAuthSettings:
    """``auth`` with ``type: oauth2`` (see :mod:`.oauth`); raises AdapterError."""
    o = Options(raw, "auth.")
    o.choice("type", ("oauth2",))
    token_url = checked_url(o.text("token_url"), "auth.token_url")
    client_id = o.text("client_id")
    env, path = o.text("env", None), o.text("file", None)
    scope, audience = o.text("scope", None), o.text("audience", None)
    client_auth = o.choice("client_auth", ("basic", "post"), "basic")
    renew_before = o.seconds("renew_before", 60.0)
    o.done()
    if (env is None) == (path is None):
        raise AdapterError(
            "option 'auth': give exactly one of env (a variable's name) or file (a path) for the "
            "client secret"
        )
    secret = secret_from(env, path)
    register_secret(secret)  # a file's secret is not among the configured variables the logs mask
    return OAuthSettings(
        token_url=token_url,
        client_id=client_id,
        secret=secret,
        scope=scope,
        audience=audience,
        client_auth=f"client_secret_{client_auth}",
        renew_before=renew_before,
    )


def client_cert(raw: Any) -> tuple[str, str] | None:
    """``tls`` as requests' ``cert`` pair, checked; None when absent. Raises AdapterError."""
    if raw is None:
        return None
    o = Options(raw, "tls.")
    cert, key = o.text("cert"), o.text("key")
    o.done()
    for name, path in (("cert", cert), ("key", key)):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise AdapterError(
                f"option 'tls.{name}': the file {path} cannot be read ({exc.strerror})"
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise AdapterError(
            f"option 'tls': {cert} and {key} are not a PEM certificate and its unencrypted "
            f"private key ({reason})"
        ) from None
    return cert, key


def _no_passphrase() -> str:
    raise ValueError("the private key is encrypted")


# -- the other options, and all of them together ---------------------------------------------------

DEFAULT_COMMENT_CHARS = 1000  # customer text sent to a vendor (processor.model.customer_text)
DEFAULT_REFUSAL = "The vendor declined to cancel this subscription."


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
    """``probe``: what ``cancel-processor check`` asks the vendor (:func:`.call.probe`)."""

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
    """Everything :class:`~processor.adapters.http.call.HttpAdapter` needs, validated."""

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
    """Validate the adapter's options (see the module docstring); raises AdapterError."""
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
