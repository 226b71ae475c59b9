"""Logs and metrics.

Logs are structlog events: JSON lines when stderr is not a terminal (for log shippers), colourful
console lines when it is. Every event about a request carries the request id, subscription id,
product, attempt and outcome (the engine binds them). A masking processor replaces every registered
secret (API keys, vendor tokens) with ``***`` wherever it appears in an event, so a secret that
slips into an exception message still never reaches the log.

Metrics are prometheus-client collectors on a registry of our own (tests and several engines in one
process must not collide on the global registry).

What an event costs matters: the engine logs every state change, several per request. The logger
that :func:`get_logger` binds to is built once per logging configuration (structlog would build
one per call), events below the level cost a bind and nothing else, and JSON lines are rendered
by orjson. A labelled metric's child is looked up once per label values and kept.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import weakref
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

__all__ = [
    "configure_logging",
    "log_through",
    "register_secret",
    "mask",
    "mask_with",
    "secret_forms",
    "Metrics",
    "get_logger",
    "note_rate_wait",
    "note_rate_waiting",
    "note_rate_shared",
    "note_rate_shared_error",
]

_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()  # _secrets, longest first: a short form never splits a long one
_secrets_lock = threading.Lock()
MASK = "***"
MIN_SECRET = 6  # shorter values would mask ordinary words
_MIN_CORE = 8  # the shortest base64 fragment worth masking on its own


def _b64_cores(raw: bytes) -> set[str]:
    """Every form ``raw`` takes inside base64 text: its own encoding (padded or not, standard or
    URL-safe), and, for each of the three byte alignments it can have inside a longer encoded
    text (a whole ``Authorization`` header, a JSON document), the characters that depend on
    ``raw`` alone."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        forms.update((whole, whole.rstrip("=")))
        for offset in range(3):
            text = encode(b"\0" * offset + raw).decode("ascii")
            start = 4 if offset else 0  # the first group mixes padding with the secret
            end = 4 * ((offset + len(raw)) // 3)  # the last partial group mixes what follows
            if end - start >= _MIN_CORE:
                forms.add(text[start:end])
    return forms


def secret_forms(value: str | None) -> tuple[str, ...]:
    """Every form of ``value`` a text could carry, longest first: the value; the credential after
    its scheme (``ApiKey SU-1:secret`` -> ``SU-1:secret``, ``Bearer t`` -> ``t``); the secret part
    of a Connect key (after the last ``:``); the base64 of each (see :func:`_b64_cores`, so the
    base64 of a whole header is covered too); and the URL-encoded forms of each. Forms shorter
    than :data:`MIN_SECRET` characters are left out (they would mask ordinary words)."""
    if not value or len(value.strip()) < MIN_SECRET:
        return ()
    text = value.strip()
    bases = {text}
    if " " in text:
        bases.add(text.split(" ", 1)[1].strip())
    if ":" in text:
        bases.add(text.rsplit(":", 1)[1].strip())
    forms: set[str] = set()
    for base in (b for b in bases if len(b) >= MIN_SECRET):
        forms.add(base)
        forms.update(_b64_cores(base.encode("utf-8")))
        for encoded in (quote(base, safe=""), quote_plus(base), quote(base)):
            forms.update((encoded, encoded.lower()) if "%" in encoded else (encoded,))
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True))


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line, in any of its forms (:func:`secret_forms`). Short
    values are ignored (they would mask ordinary words)."""
    global _ordered
    forms = secret_forms(value)
    if not forms:
        return
    with _secrets_lock:
        _secrets.update(forms)
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def mask(text: str) -> str:
    """``text`` with every form of every registered secret replaced by ``***``."""
    return mask_with(text, _ordered)


def mask_with(text: str, forms: tuple[str, ...]) -> str:
    """``text`` with each of ``forms`` (longest first, as :func:`secret_forms` gives them)
    replaced by ``***``."""
    for secret in forms:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(v) for v in value)
    if isinstance(value, BaseException):
        return mask(f"{type(value).__name__}: {value}")
    return value


def _mask_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    forms = _ordered
    if not forms:
        return event
    # Most events hold only short texts, numbers and None, and no secret: their texts are looked
    # through once, joined, instead of each text once per form (a fifth of an event's cost).
    # Any other value, or a form found anywhere, takes the whole walk.
    texts = []
    for value in event.values():
        kind = type(value)
        if kind is str:
            texts.append(value)
        elif kind not in _PLAIN:
            return {key: _mask_value(value) for key, value in event.items()}
    if any(map("\0".join(texts).__contains__, forms)):
        return {key: _mask_value(value) for key, value in event.items()}
    return event


_PLAIN = frozenset({type(None), bool, int, float})  # values no secret can be in


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_processor,
    ]
    renderer: Any = structlog.dev.ConsoleRenderer(colors=True) if fmt == "console" else _json_line
    structlog.configure(
        processors=processors + [renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (urllib3, uvicorn) stay quiet below warnings.
    logging.basicConfig(
        level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s %(message)s"
    )


def _json_line(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """One JSON line, as structlog's JSONRenderer writes it (anything else as its ``repr``), by
    orjson: several times faster than the standard library's encoder."""
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # what orjson refuses (an integer beyond 64 bits): the slow way
        return json.dumps(event, default=repr)


# LogRecord attributes an event field must not overwrite (logging raises KeyError on them).
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class _ToStdlib:
    """structlog's logger for :func:`log_through`: one record per event on a standard logger."""

    def __init__(self, target: logging.Logger) -> None:
        self.target = target

    def msg(self, message: str, **fields: Any) -> None:
        level = fields.pop("level", "info")
        extra = {(k if k not in _RECORD_ATTRS else f"{k}_"): v for k, v in fields.items()}
        self.target.log(getattr(logging, str(level).upper(), logging.INFO), message, extra=extra)

    debug = info = warning = warn = error = critical = exception = log = msg


def _render_line(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    # One line: the event name and its fields (for a console), the fields again as extra (for a
    # shipper that indexes them).
    fields = {k: v for k, v in event.items() if k not in ("event", "level")}
    text = " ".join([str(event.get("event", ""))] + [f"{k}={v}" for k, v in fields.items()])
    return {"message": " ".join(text.split()), "level": event.get("level", "info"), **fields}


_route: tuple[logging.Logger, Any] | None = None  # (target, the factory configured for it)


def log_through(target: logging.Logger) -> None:
    """Send the processor's events to ``target`` (the EaaS runner's extension logger), one record
    each, instead of stderr; the level is ``target``'s, and no root handler is added. Called per
    task: a no-op while structlog is still configured for ``target``."""
    global _route
    configured = structlog.get_config().get("logger_factory")
    if _route is not None and _route[0] is target and configured is _route[1]:
        return

    def enabled(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not target.isEnabledFor(getattr(logging, method.upper(), logging.INFO)):
            raise structlog.DropEvent
        return event

    def factory(*_: Any) -> _ToStdlib:
        return _ToStdlib(target)

    structlog.configure(
        processors=[
            enabled,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            _mask_processor,
            _render_line,
        ],
        wrapper_class=structlog.BoundLogger,
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route = (target, factory)


_root: tuple[tuple[int, ...], Any] | None = None  # (the configuration it was built for, logger)


def get_logger(**bound: Any) -> Any:
    """A logger with ``bound`` fields, bound to one built once per logging configuration.

    structlog (not caching, because the configuration changes: tests, :func:`log_through`) would
    build a logger from its configuration on every call; this keeps the one built for the current
    configuration and rebuilds it only when :func:`structlog.configure` has changed something.
    """
    global _root
    config = structlog.get_config()
    key = tuple(map(id, config.values()))
    root = _root
    if root is None or root[0] != key:
        root = (key, structlog.get_logger("cancel-processor").bind())
        _root = root
    return root[1].bind(**bound)


class _CachedChildren:
    """``labels()`` that looks each child up once: prometheus-client validates the label values,
    builds a key and takes a lock on every call, for a child that never changes."""

    def labels(self, *values: Any, **named: Any) -> Any:
        cache: dict[Any, Any] = self.__dict__.setdefault("_children_cache", {})
        key = (values, tuple(named.items()))
        child = cache.get(key)
        if child is None:
            child = super().labels(*values, **named)  # type: ignore[misc]
            cache[key] = child
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.pop("_children_cache", None)
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.pop("_children_cache", None)
        super().clear()  # type: ignore[misc]


class Counter(_CachedChildren, _Counter):
    pass


class Gauge(_CachedChildren, _Gauge):
    pass


class Histogram(_CachedChildren, _Histogram):
    pass


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The processor's Prometheus collectors, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.outcomes = Counter(
            "cancel_requests_total",
            "Requests that reached an outcome, by outcome",
            ["outcome"],
            registry=r,
        )
        self.transitions = Counter(
            "cancel_journal_transitions_total",
            "Journal state changes, by target state",
            ["state"],
            registry=r,
        )
        self.vendor_calls = Histogram(
            "cancel_vendor_call_seconds",
            "Vendor adapter call latency, by operation and outcome",
            ["operation", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.connect_calls = Histogram(
            "cancel_connect_call_seconds",
            "Connect API call latency (each HTTP attempt), by operation",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "cancel_retries_total",
            "Retries, by cause and operation",
            ["cause", "operation"],
            registry=r,
        )
        self.throttled = Counter(
            "cancel_connect_throttled_total", "HTTP 429 answers received from Connect", registry=r
        )
        self.backlog = Gauge(
            "cancel_backlog", "Pending cancel requests seen in the last pass", registry=r
        )
        self.oldest_pending = Gauge(
            "cancel_oldest_pending_age_seconds",
            "Age of the oldest pending cancel seen in the last pass",
            registry=r,
        )
        self.parked = Gauge("cancel_parked", "Requests parked for a human", registry=r)
        self.held_now = Gauge(
            "cancel_held",
            "Requests whose refusal or 'already gone' is held back from Connect (guard.hold)",
            registry=r,
        )
        self.held = Counter(
            "cancel_held_outcomes",
            "Refusals and 'already gone' answers held back from Connect, by adapter",
            ["adapter"],
            registry=r,
        )
        self.lease_lost = Counter(
            "cancel_lease_steals_total", "Claims lost to another worker", registry=r
        )
        self.stranded = Counter(
            "cancel_stranded_claims_total",
            "Claims a dead or frozen process left behind, taken over",
            registry=r,
        )
        self.circuit_open = Gauge(
            "cancel_vendor_circuit_open",
            "1 while the vendor circuit is open",
            ["adapter"],
            registry=r,
        )
        self.anomaly = Gauge(
            "cancel_vendor_anomaly",
            "1 while the anomaly guard holds the adapter's circuit open, until cancel-processor "
            "resume",
            ["adapter"],
            registry=r,
        )
        self.journal_full = Gauge(
            "cancel_journal_full",
            "1 while the last pass could not write the journal (a full disk): waiting for space",
            registry=r,
        )
        self.passes = Counter("cancel_poll_passes_total", "Completed polling passes", registry=r)
        self.notes_owed = Gauge(
            "cancel_notes_owed",
            "Notes Connect has not taken yet, left owed by the last pass (counts up to 100)",
            registry=r,
        )
        self.reconcile_divergences = Gauge(
            "cancel_reconcile_divergences",
            "Divergences the last scheduled reconciliation found, by kind",
            ["kind"],
            registry=r,
        )
        self.reconcile_unreadable = Gauge(
            "cancel_reconcile_unreadable",
            "Status reads the last scheduled reconciliation could not use",
            registry=r,
        )
        self.rate_waits = Counter(
            "cancel_vendor_rate_waits_total",
            "Vendor calls that waited for the adapter's rate limit (not an error)",
            ["adapter"],
            registry=r,
        )
        self.rate_wait_seconds = Counter(
            "cancel_vendor_rate_wait_seconds_total",
            "Seconds vendor calls spent waiting for the adapter's rate limit",
            ["adapter"],
            registry=r,
        )
        self.rate_waiting = Gauge(
            "cancel_vendor_rate_waiting",
            "Vendor calls waiting for a slot of the adapter's rate limit now",
            ["adapter"],
            registry=r,
        )
        self.rate_waiting_since = Gauge(
            "cancel_vendor_rate_waiting_since_timestamp_seconds",
            "Unix time the longest current wait for the adapter's rate limit began (0: none)",
            ["adapter"],
            registry=r,
        )
        self.rate_shared = Gauge(
            "cancel_vendor_rate_shared",
            "1 when the adapter's rate limit is shared by every replica through the PostgreSQL "
            "journal, 0 when it is this process's own",
            ["adapter"],
            registry=r,
        )
        self.rate_shared_errors = Counter(
            "cancel_vendor_rate_shared_errors_total",
            "Shared rate slots the journal could not give (unreachable): those calls waited for "
            "this process's own limit instead",
            ["adapter"],
            registry=r,
        )
        self.reconcile_completed = Gauge(
            "cancel_reconcile_last_completed_timestamp_seconds",
            "Unix time the last scheduled reconciliation completed (0: none yet)",
            registry=r,
        )
        self.unaccounted = Gauge(
            "cancel_pending_unaccounted",
            "Pending cancels Connect counted at the end of the last pass that the journal does "
            "not hold (a gap in the listing; 0 when the pass was complete)",
            registry=r,
        )

        _live_metrics.add(self)

    def on_connect_call(self, operation: str, seconds: float) -> None:
        self.connect_calls.labels(operation=operation).observe(seconds)

    def on_retry(self, cause: str, operation: str) -> None:
        self.retries.labels(cause=cause, operation=operation).inc()
        if cause == "throttled":
            self.throttled.inc()


# Adapters are built from their options alone, so they cannot be handed the daemon's Metrics:
# what they observe reaches every live one.
_live_metrics: weakref.WeakSet[Metrics] = weakref.WeakSet()


def note_rate_wait(adapter: str, seconds: float) -> None:
    """A vendor call waited ``seconds`` for its adapter's rate limit (processor.adapters.rate)."""
    for metrics in list(_live_metrics):
        metrics.rate_waits.labels(adapter=adapter).inc()
        metrics.rate_wait_seconds.labels(adapter=adapter).inc(seconds)


def note_rate_waiting(adapter: str, waiting: int, since: float) -> None:
    """``waiting`` calls wait for ``adapter``'s rate limit now, the longest since the Unix time
    ``since`` (0 when none waits)."""
    for metrics in list(_live_metrics):
        metrics.rate_waiting.labels(adapter=adapter).set(waiting)
        metrics.rate_waiting_since.labels(adapter=adapter).set(since)


def note_rate_shared(adapter: str, shared: bool) -> None:
    """Whether ``adapter``'s rate limit is shared through the journal (set when wired)."""
    for metrics in list(_live_metrics):
        metrics.rate_shared.labels(adapter=adapter).set(1 if shared else 0)


def note_rate_shared_error(adapter: str) -> None:
    """The journal could not give ``adapter`` a shared slot: the call used the process's limit."""
    for metrics in list(_live_metrics):
        metrics.rate_shared_errors.labels(adapter=adapter).inc()
