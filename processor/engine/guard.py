"""The anomaly guard: a burst of "already gone" or "refused" answers stops the adapter.

A vendor that suddenly answers "gone" for every subscription is far more likely misconfigured (a
path its router answers with the same 404 body as a missing subscription, a proxy in front of it)
than emptied overnight; every such answer approves a cancellation on Connect. So the guard keeps
the latest ``guard.window`` final outcomes per adapter, and when ``guard.in_a_row`` of one kind
come in a row, or more than ``guard.share`` of a full window is one kind, it *latches* the
adapter's circuit: no further vendor call, requests wait where they are, ``/readyz`` answers 503
naming the reason, ``cancel_vendor_anomaly`` is 1 and one error log line says why. A mass
mis-approval stops at a handful, not at the whole backlog.

**A rate, not only a run.** The guard also weighs the answers of the last ``guard.rate_window``
seconds (by default the hold): once at least ``guard.min_sample`` final answers came in that window,
more than ``guard.share`` of them of one watched kind latches too. A vendor that refuses six
cancels in ten, or answers a slow trickle of requests with "gone", never makes ten in a row, and a
count window of fifty fills only after the damage; the time window with a minimum sample catches
both while :mod:`processor.engine.hold` still holds their outcomes back from Connect. The minimum
sample keeps a single genuine refusal on a quiet day from latching.

**Not the only journal.** Some answers prove that something other than this journal acts on the
same requests: a request approved on Connect right after this journal terminated it and before
any approve of its own could have left; a subscription found terminated by the status read mode
``read`` makes before each terminate that starts afresh; a request this journal never started
found approved on Connect. That is a second processor with its own journal (two
replicas each given a volume), or this journal restored from a backup taken before requests it
had terminated were approved. Every further request may be terminated twice in mode ``read`` or
``none``, so the first such sign latches the adapter (:meth:`AnomalyGuard.another_processor`,
reason "another processor or a restored journal"), unless ``guard.another_processor`` is false.
A resume accepts what the journal held at that moment (a restore, explained): a sign about a
request first recorded before the resume does not latch again; one about a later request does.

Only a person lifts it, after looking: ``cancel-processor resume ADAPTER``. Latches live in a small
JSON file (:class:`LatchFile`) that every process of the daemon reads, at most once a second, so a
``resume`` run beside a daemon reaches it, and a latch one process set holds the others too. Limit:
processes on different hosts share it only when the file is on a shared volume; otherwise each
latches on its own observations and is resumed on its host.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processor.config.schema import Config, GuardConfig
from processor.engine.circuit import CircuitBreaker
from processor.observe import Metrics, get_logger

__all__ = ["AnomalyGuard", "LatchFile", "WATCHED", "latch_path", "latched"]

WATCHED = ("already_gone", "refused")  # outcomes the customer sees that no termination backs
ACCEPTED = "accepted"
# "accepted": an asynchronous vendor took the step as an operation. It is counted when it is
# answered, in its place among the answers of that moment (a completion comes seconds or minutes
# after the refusals sent beside it, and counted then it would leave a backfill's refusals in a
# row), and resolved later (:meth:`AnomalyGuard.resolve`) into what the operation turned out to be.
_FINAL = ("terminated", ACCEPTED, *WATCHED)
_SYNC_EVERY = 1.0  # seconds between reads of the latch file


def latch_path(config: Config) -> Path:
    """Where latches are kept: ``guard.state_file``, else beside an SQLite journal, else the cwd."""
    if config.guard.state_file:
        return Path(config.guard.state_file)
    url = config.journal.url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :] + ".guard.json")
    return Path("cancel-processor-guard.json")


def latched(config: Config) -> dict[str, dict[str, str]]:
    """The adapters latched now, with ``reason`` and ``since`` (for ``status``, ``check``)."""
    return LatchFile(latch_path(config)).read()


class LatchFile:
    """``{adapter: {"reason", "since"}}`` in a JSON file, replaced atomically on every change. An
    adapter resumed keeps ``{"resumed": when}`` (no ``reason``: not latched), which
    :meth:`AnomalyGuard.another_processor` reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict[str, str]]:
        """The latched adapters, with their reason and since when."""
        return {k: v for k, v in self._entries().items() if "reason" in v}

    def resumed(self) -> dict[str, datetime]:
        """When each adapter that is not latched was last resumed."""
        marks: dict[str, datetime] = {}
        for name, entry in self._entries().items():
            when = entry.get("resumed") if "reason" not in entry else None
            try:
                marks[name] = datetime.fromisoformat(str(when))
            except ValueError:
                continue
        return marks

    def _entries(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # An unreadable latch file must not resume a latched vendor by accident: say so loudly.
            raise OSError(f"latch file {self.path} cannot be read: {exc}") from None
        return (
            {str(k): v for k, v in data.items() if isinstance(v, dict)}
            if isinstance(data, dict)
            else {}
        )

    def set(self, adapter: str, reason: str) -> None:
        with self._lock:
            entries = self._entries()
            entries[adapter] = {"reason": reason, "since": _now()}
            self._write(entries)

    def clear(self, adapter: str) -> dict[str, str] | None:
        """Lift the adapter's latch (remembering when); what it was, or None if not latched."""
        with self._lock:
            entries = self._entries()
            gone = entries.get(adapter)
            if gone is None or "reason" not in gone:
                return None
            entries[adapter] = {"resumed": _now()}
            self._write(entries)
            return gone

    def mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def _write(self, latches: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".guard-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(latches, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class AnomalyGuard:
    """Watches outcomes per adapter and latches its breaker on a burst (the module docstring)."""

    def __init__(
        self,
        settings: GuardConfig,
        breakers: Mapping[str, CircuitBreaker],
        metrics: Metrics,
        latches: LatchFile | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.breakers = breakers
        self.metrics = metrics
        self.latches = latches
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[str]] = {
            name: deque(maxlen=settings.window) for name in breakers
        }
        # (monotonic time, outcome) of the answers within the rate window, per adapter.
        self._recent: dict[str, deque[tuple[float, str]]] = {name: deque() for name in breakers}
        self._synced_at: float | None = None
        self._seen_mtime: float | None = -1.0
        self._resumed: dict[str, datetime] = {}
        self.sync(force=True)

    def another_processor(
        self, adapter: str, why: str, request_id: str, first_seen: datetime | None
    ) -> str | None:
        """A sign that something other than this journal acts on the request (the module
        docstring): latch ``adapter``; the reason when it latched now, else None. ``first_seen``
        is when the journal first recorded the request (its row's creation)."""
        log = get_logger(component="guard", request_id=request_id)
        if not (self.settings.enabled and self.settings.another_processor):
            log.warning("another_processor_sign", adapter=adapter, sign=why, latched=False)
            return None
        self.sync()
        resumed = self._resumed.get(adapter)
        if first_seen is not None and first_seen.tzinfo is None:
            first_seen = first_seen.replace(tzinfo=UTC)  # the journal's times are UTC
        if resumed is not None and first_seen is not None and first_seen <= resumed:
            # Resumed after looking: what the journal held then is explained (a restore).
            log.info("another_processor_sign_accepted", adapter=adapter, sign=why)
            return None
        if adapter not in self.breakers:  # an adapter this process did not load: nothing to stop
            log.warning("another_processor_sign", adapter=adapter, sign=why, latched=False)
            return None
        log.warning("another_processor_sign", adapter=adapter, sign=why, latched=True)
        return self._latch(adapter, f"another processor or a restored journal: {why}")

    def resumed_at(self, adapter: str) -> datetime | None:
        """When a person last resumed ``adapter`` (the latch file), or None."""
        return self._resumed.get(adapter)

    def record(self, adapter: str, outcome: str, ago: float = 0.0) -> str | None:
        """Note a final vendor outcome (``ago`` seconds ago: one read back from the journal at
        start); the reason when it latched the adapter now, else None."""
        if not self.settings.enabled or outcome not in _FINAL or adapter not in self._windows:
            return None
        with self._lock:
            window = self._windows[adapter]
            window.append(outcome)
            recent = self._recent[adapter]
            now = self._clock()
            recent.append((now - max(ago, 0.0), outcome))
            reason = self._anomaly(window) or self._rate(recent, now)
            if reason is None:
                return None
            window.clear()  # after a resume, the count starts again
            recent.clear()
        return self._latch(adapter, reason)

    def resolve(self, adapter: str, outcome: str) -> str | None:
        """An accepted operation turned out ``outcome`` (terminated, or refused when it failed):
        the oldest answer still counted as accepted becomes it, in its place (or, with none left
        in memory -- a restart -- the outcome is noted as new). The reason when it latched the
        adapter now, else None."""
        if not self.settings.enabled or adapter not in self._windows:
            return None
        with self._lock:
            window, recent = self._windows[adapter], self._recent[adapter]
            at = next((i for i, seen in enumerate(window) if seen == ACCEPTED), None)
            if at is None:
                window.append(outcome)
                recent.append((self._clock(), outcome))
            else:
                window[at] = outcome
                since = next((i for i, seen in enumerate(recent) if seen[1] == ACCEPTED), None)
                if since is not None:
                    recent[since] = (recent[since][0], outcome)
            reason = self._anomaly(window) or self._rate(recent, self._clock())
            if reason is None:
                return None
            window.clear()
            recent.clear()
        return self._latch(adapter, reason)

    def _rate(self, recent: deque[tuple[float, str]], now: float) -> str | None:
        """More than ``share`` of one watched kind among at least ``min_sample`` answers within
        the rate window (the module docstring)."""
        horizon = now - self.settings.rate_seconds
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if len(recent) < self.settings.min_sample:
            return None
        for kind in WATCHED:
            count = sum(1 for _, outcome in recent if outcome == kind)
            if count > self.settings.share * len(recent):
                seconds = f"{self.settings.rate_seconds:g}"
                return f"{count} of the {len(recent)} answers of the last {seconds} s were {kind}"
        return None

    def _anomaly(self, window: deque[str]) -> str | None:
        for kind in WATCHED:
            run = 0
            for outcome in reversed(window):
                if outcome != kind:
                    break
                run += 1
            if run >= self.settings.in_a_row:
                return f"{run} {kind} answers in a row"
            count = sum(1 for outcome in window if outcome == kind)
            if len(window) == window.maxlen and count > self.settings.share * len(window):
                return f"{count} of the last {len(window)} answers were {kind}"
        return None

    def _latch(self, adapter: str, reason: str) -> str:
        why = f"{reason}; resume with: cancel-processor resume {adapter}"
        breaker = self.breakers[adapter]
        if not breaker.latch(why):
            return str(breaker.latched)  # latched already: the first reason stands
        self.metrics.anomaly.labels(adapter=adapter).set(1)
        get_logger(component="guard").error("vendor_anomaly", adapter=adapter, reason=why)
        if self.latches is not None:
            try:
                self.latches.set(adapter, why)
            except OSError as exc:  # the latch holds in this process regardless
                get_logger(component="guard").error(
                    "latch_not_saved", adapter=adapter, error=str(exc)
                )
        return why

    def sync(self, force: bool = False) -> bool:
        """Follow the latch file: latches set elsewhere hold here, cleared ones (resume) release.
        True when a latch was released now."""
        if self.latches is None:
            return False
        now = self._clock()
        with self._lock:
            if not force and self._synced_at is not None and now - self._synced_at < _SYNC_EVERY:
                return False
            self._synced_at = now
            mtime = self.latches.mtime()
            if not force and mtime == self._seen_mtime:
                return False
            self._seen_mtime = mtime
        try:
            latched = self.latches.read()
            self._resumed = self.latches.resumed()
        except OSError as exc:
            get_logger(component="guard").error("latch_file_unreadable", error=str(exc))
            return False
        released = False
        for name, breaker in self.breakers.items():
            entry = latched.get(name)
            if entry is not None and breaker.latched is None:
                breaker.latch(str(entry.get("reason") or "latched by another process"))
                self.metrics.anomaly.labels(adapter=name).set(1)
            elif entry is None and breaker.latched is not None:
                breaker.unlatch()
                released = True
                self.metrics.anomaly.labels(adapter=name).set(0)
                get_logger(component="guard").warning("vendor_resumed", adapter=name)
        return released
