"""The worker pool: bounded concurrency, one worker per request id in this process.

A request already in flight here is not submitted twice (the journal's lease keeps other processes
off it); at most twice ``concurrency`` work items wait for a worker, so the listing never runs far
ahead of the work. Each work item answers typed results (:mod:`processor.engine.results`) by
request id; a work item that raises counts as :attr:`Outcome.ERROR` for its ids and the loop goes
on (the journal keeps the request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from processor.daemon.summary import Tally
from processor.engine.core import Engine, Intake
from processor.engine.results import Outcome, Reached
from processor.journal.base import Claim, JournalFull
from processor.observe import get_logger

__all__ = ["WorkerPool"]

log = get_logger(component="daemon")
Job = Callable[[], dict[str, Reached]]


class WorkerPool:
    def __init__(
        self,
        engine: Engine,
        tally: Tally,
        stop: threading.Event,
        stop_deadline: Callable[[], float | None],
    ) -> None:
        concurrency = engine.settings.concurrency
        self.engine = engine
        self.tally = tally
        self.stop = stop
        self.stop_deadline = stop_deadline  # time.monotonic() by which run() returns, once stopping
        self.lock = threading.Lock()
        self.inflight: set[str] = set()
        self.full = 0  # requests whose journal write was refused (a full disk) since taken
        self.full_error = ""
        self.slots = threading.BoundedSemaphore(concurrency * 2)
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="worker")

    def busy(self, request_id: str) -> bool:
        with self.lock:
            return request_id in self.inflight

    def reserve(self, request_ids: list[str]) -> list[str]:
        """Mark ids in flight and take a pool slot; the ids taken (none when stopping)."""
        with self.lock:
            taken = [rid for rid in request_ids if not (rid and rid in self.inflight)]
            self.inflight.update(taken)
        if not taken:
            return []
        while not self.slots.acquire(timeout=0.5):
            if self.stop.is_set():
                with self.lock:
                    self.inflight.difference_update(taken)
                return []
        return taken

    def submit(self, payload: Any) -> None:
        """A listed payload, or the :class:`Intake` the daemon read it into to group it."""
        if isinstance(payload, Intake):
            request_id = payload.request_id
        else:
            request_id = str(payload.get("id")) if isinstance(payload, Mapping) else ""
        if self.reserve([request_id]):
            self.executor.submit(
                self.work, [request_id], lambda: {request_id: self.engine.handle(payload)}
            )

    def submit_group(self, intakes: list[Intake]) -> None:
        ids = self.reserve([intake.request_id for intake in intakes])
        chosen = [intake for intake in intakes if intake.request_id in ids]
        if chosen:
            self.executor.submit(self.work, ids, lambda: self.engine.handle_batch(chosen))

    def submit_timer(self, claim: Claim) -> None:
        if self.reserve([claim.request_id]):
            self.tally.summary.timers += 1
            self.executor.submit(
                self.work,
                [claim.request_id],
                lambda: {claim.request_id: self.engine.resume(claim)},
            )
        else:
            self.engine.journal.release(claim)  # in flight here already, or stopping

    def work(self, request_ids: list[str], job: Job) -> None:
        results: dict[str, Reached] = {}
        try:
            if not self.stop.is_set():  # queued but not started: claim nothing new during shutdown
                results = job()
        except JournalFull as exc:
            # Weather: one line per pass says it (Daemon.run_pass), not one per request.
            results = {rid: Outcome.JOURNAL_FULL for rid in request_ids}
            self.note_full(str(exc), len(request_ids))
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the journal keeps the request
            results = {rid: Outcome.ERROR for rid in request_ids}
            log.exception(
                "request_error", request_ids=request_ids[:10], error=f"{type(exc).__name__}: {exc}"
            )
        finally:
            self.slots.release()
            with self.lock:
                self.inflight.difference_update(request_ids)
        for request_id, result in results.items():
            self.tally.record(request_id, result)

    def note_full(self, error: str, requests: int = 0) -> None:
        """A journal write refused by a full disk (:class:`JournalFull`), said once per pass."""
        with self.lock:
            self.full += requests
            self.full_error = error

    def take_full(self) -> tuple[int, str]:
        """How many requests met a full journal disk since the last call, and its error ("" when
        none did)."""
        with self.lock:
            taken = (self.full, self.full_error)
            self.full, self.full_error = 0, ""
        return taken

    def drain(self, timeout: float | None) -> None:
        """Wait for the work in flight; ``timeout`` only applies once stopping, and counts from the
        stop request (one shutdown budget in all, however many drains the shutdown passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop_deadline = self.stop_deadline()
        if stop_deadline is not None and self.stop.is_set():
            deadline = stop_deadline
        while True:
            with self.lock:
                if not self.inflight:
                    return
            if deadline is not None and time.monotonic() > deadline:
                log.warning("shutdown_timeout", in_flight=len(self.inflight))
                return
            time.sleep(0.01)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False)
