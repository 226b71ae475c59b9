"""The loop: poll Connect, hand each pending cancel to a bounded worker pool, repeat.

A pass lists every request pending at its start (keyset paging in the gateway, so approvals made
during the pass never shift the window) and submits each to the pool; a request already in flight
in this process is not submitted twice, and the journal's lease keeps other processes off it.

Shutdown (SIGTERM/SIGINT, or :meth:`Daemon.stop`): nothing new is claimed, in-flight requests
finish their current step, and :meth:`Daemon.run` returns within ``shutdown_timeout``. Whatever
was cut short is safe: the journal resumes it on the next start.

``once=True`` drains: it repeats passes while requests it touched are unfinished and due within
``once_max_wait``, then returns; :attr:`RunSummary.complete` says whether all reached a final state.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from processor.engine import Engine
from processor.journal.base import FINAL_STATES, State
from processor.marketplace import Marketplace, MarketplaceError, Selector
from processor.model import parse_datetime
from processor.observe import get_logger

__all__ = ["Daemon", "RunSummary"]

log = get_logger(component="daemon")
_FINAL_NAMES = {s.value for s in FINAL_STATES}
_OPEN_STATES = (State.NEW, State.TERMINATING, State.TERMINATED, State.REFUSING)


@dataclass
class RunSummary:
    results: Counter[str] = field(default_factory=Counter)
    unfinished: dict[str, str] = field(default_factory=dict)
    passes: int = 0
    seen: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def complete(self) -> bool:
        """Everything reached a final state that needs nobody (a parked request needs a person)."""
        return not self.unfinished and not self.errors and not self.interrupted and not self.results["parked"]


class Daemon:
    def __init__(
        self,
        engine: Engine,
        marketplace: Marketplace,
        selector: Selector,
        *,
        once: bool = False,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.marketplace = marketplace
        self.selector = selector
        self.once = once
        self.settings = engine.settings
        self.on_result = on_result
        self.summary = RunSummary()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._slots = threading.BoundedSemaphore(self.settings.concurrency * 2)
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="worker")
        self._random = random.Random()

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown_requested")
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> RunSummary:
        deadline = time.monotonic() + self.settings.once_max_wait
        try:
            while not self._stop.is_set():
                self._pass()
                if self.once:
                    wait = self._next_due_within(deadline)
                    if wait is None:
                        break
                    self._stop.wait(wait)
                else:
                    interval = self.settings.poll_interval
                    self._stop.wait(interval * (1 + self._random.uniform(0, self.settings.poll_jitter)))
        finally:
            self.summary.interrupted = self._stop.is_set() and self.once
            self._drain(self.settings.shutdown_timeout)
            self._pool.shutdown(wait=False)
            self.summary.finished = time.monotonic()
        return self.summary

    # -- one pass -------------------------------------------------------------------------------

    def _pass(self) -> None:
        seen = 0
        oldest: datetime | None = None
        try:
            for payload in self.marketplace.iter_pending(self.selector):
                if self._stop.is_set():
                    break
                seen += 1
                created = parse_datetime(payload.get("created")) if isinstance(payload, Mapping) else None
                if created and (oldest is None or created < oldest):
                    oldest = created
                self._submit(payload)
        except MarketplaceError as exc:
            # Connect is unreachable or refusing for now; the next pass tries again.
            log.warning("poll_failed", error=str(exc))
        self._drain(None if not self._stop.is_set() else self.settings.shutdown_timeout)
        if not self._stop.is_set():
            self._settle_stale()
        self.summary.passes += 1
        self.summary.seen += seen
        metrics = self.engine.metrics
        metrics.passes.inc()
        metrics.backlog.set(seen)
        metrics.oldest_pending.set((datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0)

    def _settle_stale(self, limit: int = 200) -> None:
        """Rows left open by a crash after Connect acted (they no longer show in the poll)."""
        journal = self.engine.journal
        quiet_since = datetime.now(timezone.utc) - timedelta(seconds=self.engine.lease_seconds)
        stale = [r.request_id for r in journal.records(states=_OPEN_STATES, updated_until=quiet_since, limit=limit)]
        for request_id in stale:
            if self._stop.is_set():
                return
            try:
                result = self.engine.settle(request_id)
            except MarketplaceError as exc:
                log.warning("settle_failed", request_id=request_id, error=str(exc))
                continue
            if result in _FINAL_NAMES:
                log.info("request_settled", request_id=request_id, state=result)

    def _submit(self, payload: Any) -> None:
        request_id = str(payload.get("id")) if isinstance(payload, Mapping) else ""
        with self._lock:
            if request_id and request_id in self._inflight:
                return
            self._inflight.add(request_id)
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                with self._lock:
                    self._inflight.discard(request_id)
                return
        self._pool.submit(self._work, request_id, payload)

    def _work(self, request_id: str, payload: Any) -> None:
        if self._stop.is_set():  # queued but not started: claim nothing new during shutdown
            self._slots.release()
            with self._lock:
                self._inflight.discard(request_id)
            return
        try:
            result = self.engine.handle(payload)
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the journal keeps the request
            result = "error"
            log.exception("request_error", request_id=request_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._slots.release()
        with self._lock:
            self._inflight.discard(request_id)
            self.summary.results[result] += 1
            if result == "error":
                self.summary.errors += 1
            if request_id:
                if result in _FINAL_NAMES or result in ("ignored", "malformed"):
                    self.summary.unfinished.pop(request_id, None)
                elif result != "busy" or request_id not in self.summary.unfinished:
                    self.summary.unfinished[request_id] = result
        if self.on_result:
            self.on_result(request_id, result)

    def _drain(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._inflight:
                    return
            if deadline is not None and time.monotonic() > deadline:
                log.warning("shutdown_timeout", in_flight=len(self._inflight))
                return
            time.sleep(0.01)

    def _next_due_within(self, deadline: float) -> float | None:
        """--once: seconds to wait before another pass can make progress, or None to stop."""
        if not self.summary.unfinished:
            return None
        now = datetime.now(timezone.utc)
        soonest: float | None = None
        for request_id in list(self.summary.unfinished):
            record = self.engine.journal.get(request_id)
            if record is None or record.final:
                self.summary.unfinished.pop(request_id, None)
                continue
            self.summary.unfinished[request_id] = record.state.value
            if record.state in (State.WAITING_HUMAN, State.SCHEDULED):
                continue
            due = 0.0 if record.next_attempt_at is None else (record.next_attempt_at - now).total_seconds()
            soonest = due if soonest is None else min(soonest, due)
        if soonest is None or time.monotonic() + soonest > deadline:
            return None
        return max(soonest, 0.05)
