"""Readiness: can this processor do its work right now? What ``/readyz`` reports.

A readiness report is a small JSON-able dict, for example::

    {"journal": true, "connect": true, "circuits": {"vendor": "closed"}}

:func:`is_ready` says it is ready when every check is ``true`` and every circuit ``"closed"``; an
``errors`` entry (what failed, secrets masked) is commentary and decides nothing. An open vendor
circuit makes the process "not ready" on purpose: the ops server carries no business traffic, so a
Kubernetes readiness probe only turns that into a visible signal (and pauses a rolling update while
the vendor is down, which is what one wants).

Checks and their costs:

- the journal: :meth:`Journal.check_schema`, one or two indexed reads, on every call;
- Connect: a remote call is slow when Connect is (the gateway retries with backoff), so it goes
  through :class:`CachedCheck`, which runs it at most every ``ttl`` seconds in a background thread,
  waits at most ``wait`` seconds for it, and otherwise answers with the last result, which counts
  only while its last success is younger than ``max_age``;
- the vendors: each adapter's own probe (``cancel-processor check``'s; for ``http`` a status read of
  a known subscription, see ``options.probe``), through a :class:`CachedCheck` per adapter refreshed
  every :data:`VENDOR_PROBE_EVERY` seconds: a rejected token or a wrong path makes ``/readyz``
  answer 503 with the probe's reason under ``errors["vendor NAME"]``, and 200 again once a probe
  succeeds. Adapters without a probe (``noop``) are left out;
- circuits: each breaker's ``is_open``, read without locks (a momentary value is all a probe needs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from processor.journal.base import Journal
from processor.observe import get_logger, mask

__all__ = [
    "CachedCheck",
    "NotReady",
    "VENDOR_PROBE_EVERY",
    "make_readiness",
    "is_ready",
    "Readiness",
    "vendor_checks",
]

Readiness = Callable[[], dict[str, Any]]
log = get_logger(component="ops")

# How often /readyz may ask each vendor, at most (one authenticated call per adapter, whatever the
# number of /readyz hits). A status read counts against the vendor's rate limit and is seen in its
# logs; Kubernetes asks every 10 s by default, per replica, and a monitor may ask more often. Every
# 15 s bounds that to 4 calls a minute per adapter and replica, while a fixed token (or path) shows
# as ready within 15 s plus one probe, and a broken one as not ready within the same.
VENDOR_PROBE_EVERY = 15.0


class NotReady(Exception):
    """A check's "no" with a reason written for the operator: reported as it is, without the
    exception's type."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NotReady):
        return mask(str(exc))[:300]
    return mask(f"{type(exc).__name__}: {exc}")[:300]


class CachedCheck:
    """A slow check made cheap to ask: see the module docstring. ``check`` returns a truthy value
    when all is well and a falsy one or raises when not. Thread-safe; at most one run at a time."""

    def __init__(
        self,
        check: Callable[[], object],
        *,
        ttl: float = 30.0,
        max_age: float | None = None,
        wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "check",
    ) -> None:
        if ttl <= 0 or wait < 0:
            raise ValueError("ttl must be positive and wait not negative")
        self._check = check
        self.ttl = ttl
        self.max_age = 3 * ttl if max_age is None else max_age
        self.wait = wait
        self._clock = clock
        self.name = name
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._ran_at: float | None = None  # when the last run started
        self._ok_at: float | None = None  # when the last successful run finished
        self._ok = False  # the last finished run's answer
        self._running = False
        self.error: str | None = None  # why the last finished run failed (masked)

    def __call__(self) -> bool:
        with self._lock:
            now = self._clock()
            if not self._running and (self._ran_at is None or now - self._ran_at >= self.ttl):
                self._running = True
                self._ran_at = now
                threading.Thread(target=self._run, name=f"ready-{self.name}", daemon=True).start()
            if self._running and self.wait:
                self._done.wait_for(lambda: not self._running, timeout=self.wait)
            fresh = self._ok_at is not None and self._clock() - self._ok_at <= self.max_age
            return self._ok and fresh

    def pending_reason(self) -> str:
        """Why the answer is "not ready" while no run failed: the first run still under way (Connect
        slow to answer), or the last success too old."""
        with self._lock:
            now = self._clock()
            if self._ok_at is None:
                since = 0.0 if self._ran_at is None else now - self._ran_at
                return f"no answer from the first check yet ({since:.0f} s so far)"
            return (
                f"last successful check {now - self._ok_at:.0f} s ago (older than "
                f"{self.max_age:g} s)"
            )

    def _run(self) -> None:
        ok, error = False, None
        try:
            ok = bool(self._check())
            if not ok:
                error = "check answered false"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", never a crash
            error = _describe(exc)
            log.warning("readiness_check_failed", check=self.name, error=error)
        with self._lock:
            self._ok, self.error, self._running = ok, error, False
            if ok:
                self._ok_at = self._clock()
            self._done.notify_all()


def vendor_checks(
    adapters: Mapping[str, Any], *, ttl: float = VENDOR_PROBE_EVERY, wait: float = 2.0
) -> dict[str, CachedCheck]:
    """One :class:`CachedCheck` per adapter that has a probe, for :func:`make_readiness`'s
    ``vendors``: the probe ``cancel-processor check`` runs, its ``config`` or ``unreachable``
    answer raised as :class:`NotReady` with its (masked) detail."""
    from processor.ops.preflight import probe_adapter

    def probing(name: str, adapter: Any) -> Callable[[], bool]:
        def check() -> bool:
            found = probe_adapter(name, adapter)
            if found.status in ("ok", "warn"):
                return True
            raise NotReady(f"probe {found.status}: {found.detail}")

        return check

    return {
        name: CachedCheck(probing(name, adapter), ttl=ttl, wait=wait, name=f"vendor-{name}")
        for name, adapter in sorted(adapters.items())
        if callable(getattr(adapter, "probe", None))
    }


def make_readiness(
    *,
    journal: Journal,
    connect: Callable[[], object] | None = None,
    breakers: Mapping[str, Any] | None = None,
    vendors: Mapping[str, Callable[[], object]] | None = None,
) -> Readiness:
    """The callable ``/readyz`` asks. ``connect`` should be a :class:`CachedCheck` (or anything
    cheap); ``breakers`` maps adapter names to objects with an ``is_open`` attribute (the engine's
    breakers); ``vendors`` maps adapter names to their probes (:func:`vendor_checks`)."""

    def readiness() -> dict[str, Any]:
        report: dict[str, Any] = {}
        errors: dict[str, str] = {}
        try:
            journal.check_schema()
            report["journal"] = True
        except Exception as exc:  # noqa: BLE001 - unreachable, locked, old schema: all "not ready"
            report["journal"] = False
            errors["journal"] = _describe(exc)
        if connect is not None:
            report["connect"], why = _ask(connect)
            if why is not None:
                errors["connect"] = why
        if vendors:
            report["vendors"] = {}
            for name, check in sorted(vendors.items()):
                report["vendors"][name], why = _ask(check)
                if why is not None:
                    errors[f"vendor {name}"] = why
        if breakers is not None:
            report["circuits"] = {
                name: "open" if b.is_open else "closed" for name, b in sorted(breakers.items())
            }
            for name, breaker in sorted(breakers.items()):
                if getattr(breaker, "latched", None):  # the anomaly guard: why, and how to resume
                    errors[f"circuit {name}"] = str(breaker.latched)
            opened = [
                name
                for name, b in sorted(breakers.items())
                if b.is_open and not getattr(b, "latched", None)
            ]
            if opened:
                errors["circuits"] = (
                    f"vendor calls paused after repeated failures: {', '.join(opened)} "
                    "(they resume by themselves once a probe call succeeds)"
                )
        if errors:
            report["errors"] = errors
        return report

    return readiness


def _ask(check: Callable[[], object]) -> tuple[bool, str | None]:
    """A check's answer, and why it is not good (None when it is): its last failure, or that it
    has not answered yet."""
    try:
        if check():
            return True, None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, _describe(exc)
    why = getattr(check, "error", None)
    if why:
        return False, str(why)
    describe = getattr(check, "pending_reason", None)
    return False, describe() if callable(describe) else "check answered false"


def is_ready(report: Mapping[str, Any]) -> bool:
    """True when every check is ``True`` and every circuit ``"closed"``; anything else is "not
    ready"."""
    for key, value in report.items():
        if key == "errors":
            continue
        if isinstance(value, Mapping):
            if not all(v is True or v == "closed" for v in value.values()):
                return False
        elif value is not True:
            return False
    return True
