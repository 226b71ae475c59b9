"""``reconcile.every``: the daemon reconciles on its own, over the trailing ``reconcile.window``.

A thread of ``cancel-processor run`` (the long-lived form only: not ``--once``, not
``--dry-run``) calls :func:`processor.ops.reconcile.reconcile` at start and then every
``reconcile.every`` seconds (counted from the start of the previous run), with the same bounded
concurrency and rate as the command. Each completed run sets the gauges
``cancel_reconcile_divergences{kind}``, ``cancel_reconcile_unreadable`` and
``cancel_reconcile_last_completed_timestamp_seconds``, and logs one warning per divergence (request
id, kind, subscription, vendor status, adapter: no detail text, which may quote a vendor body).

Shutdown: :meth:`ReconcileSchedule.stop` (forwarded with the daemon's) ends the wait between runs
and starts no further status read; a run cut short publishes nothing (a partial count would read as
"fewer divergences"). :meth:`join` waits at most the daemon's ``processing.shutdown_timeout``
from the stop request; a read still in flight past that is left to the adapter's read timeout, and
the thread is not a daemon thread, so the CLI's forced exit sees it instead of closing the journal
under it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.adapters.base import VendorAdapter
from processor.config.schema import Config
from processor.journal.base import Journal
from processor.observe import Metrics, get_logger, mask
from processor.ops.reconcile import KINDS, Reconciliation, reconcile

__all__ = ["ReconcileSchedule"]

log = get_logger(component="reconcile")


class ReconcileSchedule:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        adapters: Mapping[str, VendorAdapter],
        metrics: Metrics,
        marketplace: Any = None,
    ) -> None:
        every = config.reconcile.every
        if every is None:
            raise ValueError("reconcile.every is not set: nothing to schedule")
        self.config, self.journal, self.adapters, self.metrics = config, journal, adapters, metrics
        self.marketplace = marketplace  # the daemon's gateway: Connect's side too (None: vendor's)
        self.every = every
        self._stop = threading.Event()
        self._deadline: float | None = (
            None  # time.monotonic() by which join() gives up, once stopping
        )
        self._thread = threading.Thread(target=self._loop, name="reconcile-schedule")

    def start(self) -> ReconcileSchedule:
        log.info(
            "reconcile_scheduled",
            every_seconds=self.every,
            window_seconds=self.config.reconcile.window,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.config.processing.shutdown_timeout
        self._stop.set()

    def join(self) -> bool:
        """Wait for the thread until the shutdown budget runs out; True when it ended."""
        self.stop()
        assert self._deadline is not None
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._deadline - time.monotonic()))
        return not self._thread.is_alive()

    def run_once(self) -> Reconciliation | None:
        """One reconciliation over the window; its result, or None when a stop cut it short."""
        started = time.monotonic()
        since = datetime.now(UTC) - timedelta(seconds=self.config.reconcile.window)
        result = reconcile(
            self.config,
            self.journal,
            self.adapters,
            since=since,
            stop=self._stop,
            marketplace=self.marketplace,
            # Inside the daemon, a pending request the journal has not seen yet is most often one
            # its passes have not reached (a backlog); a pending request a pass missed is what
            # the daemon's own count after every pass reports (cancel_pending_unaccounted).
            pending_grace=math.inf,
        )
        if result.interrupted:
            log.info("reconcile_interrupted", checked=result.checked)
            return None
        self._publish(result, time.monotonic() - started)
        return result

    def _publish(self, result: Reconciliation, seconds: float) -> None:
        counts = dict.fromkeys(KINDS, 0)
        for row in result.divergences:
            counts[row.divergence] = counts.get(row.divergence, 0) + 1
            log.warning(
                "reconcile_divergence",
                request_id=row.request_id,
                kind=row.divergence,
                subscription_id=row.subscription_id,
                vendor_status=row.vendor_status,
                adapter=row.adapter,
            )
        for kind, count in counts.items():
            self.metrics.reconcile_divergences.labels(kind=kind).set(count)
        self.metrics.reconcile_unreadable.set(
            len(result.unreadable) + (1 if result.connect_error else 0)
        )
        if result.connect_error:
            log.warning("reconcile_connect_unread", error=result.connect_error)
        self.metrics.reconcile_completed.set(time.time())
        log.info(
            "reconcile_completed",
            checked=result.checked,
            divergent=len(result.divergences),
            unreadable=len(result.unreadable),
            skipped=result.skipped,
            seconds=round(seconds, 3),
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a journal outage must not end the schedule; next run retries
                log.error("reconcile_failed", error=mask(f"{type(exc).__name__}: {exc}")[:500])
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))
