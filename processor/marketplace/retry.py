"""The one retry layer between the processor and Connect.

Every HTTP call the gateway makes runs through :meth:`Retrier.call`. connect-openapi-client's own
retries are switched off (``max_retries=0``): it would retry POSTs on 5xx after a fixed second and
ignore 429, and two layers multiply attempts.

What is retried, and how long we wait:

- no response (connection refused or dropped, timeout), 5xx, or a 2xx whose body could not be
  read: full-jitter exponential backoff (``uniform(0, min(backoff_max, backoff_base * 2**n))``);
- 429: exactly what ``Retry-After`` says (seconds or an HTTP date), plus a small jitter above it,
  never below. The wait also closes a gate shared by every thread of the gateway, so no thread
  calls Connect again before the moment Connect named. A ``Retry-After`` beyond
  ``retry_after_max`` is honoured by giving up at once with :class:`TransientError` carrying the
  wait; calls from other threads fail the same way until the gate opens. 429 without
  ``Retry-After`` backs off like a 5xx;
- any other 4xx: never retried; mapped to :class:`Unauthorized` (401), :class:`NotFound` (404)
  or :class:`ActionRefused`.

After ``max_attempts`` the last transient failure becomes :class:`TransientError`. Whether a
failed *non-idempotent* call may be repeated is not decided here: :class:`CallFailed.ambiguous`
tells the gateway that the call may have acted, and the gateway reconciles before the next try.

``sleep`` and ``clock`` are injected (tests never wait); ``wall_clock`` turns an HTTP-date
``Retry-After`` into seconds. Without an injected ``sleep`` every wait is on the ``stop`` event:
once it is set (shutdown), no wait starts and a wait under way ends at once with
:class:`Stopping`, so a process asked to stop never sits out a backoff or a ``Retry-After``.

:meth:`Retrier.waiting` tells what is being waited for (operation, seconds, attempt, last cause),
for the progress lines ``--once`` and ``--dry-run`` print while Connect is slow.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from connect.client import ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from processor.marketplace.errors import (
    ActionRefused,
    MarketplaceError,
    NotFound,
    Stopping,
    TransientError,
    Unauthorized,
)
from processor.marketplace.failures import (
    BAD_RESPONSE,
    CONNECTION,
    THROTTLED,
    TLS,
    CallFailed,
    Failure,
    classify,
    parse_retry_after,
)
from processor.marketplace.settings import GatewaySettings

__all__ = [
    "Retrier",
    "CallFailed",
    "Failure",
    "Waiting",
    "classify",
    "parse_retry_after",
    "OnRetry",
]

T = TypeVar("T")
OnRetry = Callable[[str, str], None]  # (cause, operation)
OnCall = Callable[[str, float], None]  # (operation, seconds): one HTTP attempt's latency

log = structlog.get_logger("processor.marketplace")


@dataclass(frozen=True)
class Waiting:
    """A call under way: what it is, since when (``clock()`` seconds), which attempt, why it
    retried."""

    operation: str
    since: float
    attempt: int = 1
    cause: str | None = None


class Retrier:
    """Runs calls with the retry policy above; thread-safe (the throttle gate is shared)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        sleep: Callable[[float], None] | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_retry: OnRetry | None = None,
        on_call: OnCall | None = None,
        redact: Callable[[str], str] = lambda text: text,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop if stop is not None else threading.Event()
        self._calls: dict[int, Waiting] = {}  # thread id -> the call it runs
        self._calls_lock = threading.Lock()
        self._on_call = on_call
        self._operation = (
            threading.local()
        )  # the operation call() runs, for once()'s latency report
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_retry = on_retry
        self._redact = redact
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_base, max=settings.backoff_max
        )
        self._random = random.Random()
        self._gate_lock = threading.Lock()
        self._not_before = -math.inf  # clock() value before which nobody calls Connect

    # -- public --------------------------------------------------------------------------------

    def call(self, operation: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (which calls :meth:`once` or raises :class:`CallFailed`) with retries.

        Errors come out typed: :class:`TransientError`, :class:`Unauthorized`, :class:`NotFound`,
        :class:`ActionRefused`; a :class:`MarketplaceError` raised by ``attempt`` passes through.
        """
        self._operation.name = operation
        me = threading.get_ident()
        with self._calls_lock:
            self._calls[me] = Waiting(operation, self._clock())
        try:
            try:
                # The first attempt runs bare: most calls succeed at once, and building tenacity's
                # machinery for each of them costs more CPU than the call's own bookkeeping.
                return attempt()
            except CallFailed as failed:
                if not self._retryable(failed) or self.settings.max_attempts <= 1:
                    raise
                first: list[CallFailed] = [failed]
            # Tenacity takes over from the first failure, which it sees as its own first attempt,
            # so waits, logs, hooks and the attempt limit are those of a call that failed once.
            retrying = Retrying(
                stop=stop_after_attempt(self.settings.max_attempts),
                wait=self._wait,
                retry=retry_if_exception(self._retryable),
                sleep=lambda seconds: self._pause(operation, seconds),
                before_sleep=lambda state: self._before_sleep(operation, state),
                reraise=True,
            )

            def again() -> T:
                if first:
                    raise first.pop()
                return attempt()

            return retrying(again)
        except CallFailed as failed:
            raise self.error(operation, failed.failure) from None
        finally:
            self._operation.name = None
            with self._calls_lock:
                self._calls.pop(me, None)

    def waiting(self) -> list[Waiting]:
        """The calls under way now, oldest first."""
        with self._calls_lock:
            return sorted(self._calls.values(), key=lambda w: w.since)

    def _pause(self, operation: str, seconds: float) -> None:
        """A backoff or throttle wait that ends with :class:`Stopping` when the stop event is
        set."""
        if self.stop.is_set():
            raise Stopping(operation)
        if self._sleep is None:
            if self.stop.wait(max(seconds, 0.0)):
                raise Stopping(operation)
            return
        self._sleep(seconds)
        if self.stop.is_set():
            raise Stopping(operation)

    def once(self, send: Callable[[], T]) -> T:
        """One attempt: wait for the throttle gate, call, classify a failure as
        :class:`CallFailed`."""
        self._pass_gate()
        started = time.perf_counter()
        try:
            return send()
        except ClientError as exc:
            failure = classify(exc, self._wall_clock())
            if failure.cause == THROTTLED and failure.retry_after is not None:
                self._close_gate(failure.retry_after)
            raise CallFailed(failure) from exc
        finally:
            self._observe(time.perf_counter() - started)

    def _observe(self, seconds: float) -> None:
        if self._on_call is not None:
            try:
                self._on_call(getattr(self._operation, "name", None) or "other", seconds)
            except Exception as exc:  # noqa: BLE001 - a metrics hook must never break a call
                log.warning("on_call_hook_failed", error=repr(exc))

    def error(self, operation: str, failure: Failure) -> MarketplaceError:
        """The typed error for a failure that will not be retried (any more)."""
        if failure.cause == TLS:
            reason = failure.errors[0] if failure.errors else "TLS error"
            return TransientError(
                f"{operation}: Connect unavailable: TLS verification failed ({reason}); to trust a "
                "private CA, set connect.verify to its CA bundle file",
                cause=TLS,
            )
        if failure.cause == BAD_RESPONSE and failure.errors:  # the boundary said why: say it
            return TransientError(
                f"{operation}: Connect's answer could not be used: {failure.errors[0][:200]}",
                cause=failure.cause,
            )
        if failure.transient:
            wait = (
                f", retry after {failure.retry_after:g} s"
                if failure.retry_after is not None
                else ""
            )
            status = f" (HTTP {failure.status_code})" if failure.status_code else ""
            return TransientError(
                f"{operation}: Connect unavailable: {failure.cause}{status}{wait}",
                retry_after=failure.retry_after,
                cause=failure.cause,
            )
        errors = tuple(self._redact(e) for e in failure.errors)
        if failure.status_code == 401:
            return Unauthorized(f"{operation}: Connect rejected the API key (HTTP 401)")
        if failure.status_code == 404:
            return NotFound(f"{operation}: not found on Connect (HTTP 404)")
        return ActionRefused(failure.status_code, failure.error_code, errors, operation=operation)

    # -- tenacity strategies -------------------------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, CallFailed) or not exc.failure.transient or exc.failure.cause == TLS:
            return False
        retry_after = exc.failure.retry_after
        return retry_after is None or retry_after <= self.settings.retry_after_max

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, CallFailed) and exc.failure.retry_after is not None:
            return exc.failure.retry_after + self._jitter(exc.failure.retry_after)
        return float(self._backoff(state))

    def _before_sleep(self, operation: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        failure = exc.failure if isinstance(exc, CallFailed) else Failure(CONNECTION)
        with self._calls_lock:
            current = self._calls.get(threading.get_ident())
            if current is not None:
                self._calls[threading.get_ident()] = Waiting(
                    current.operation, current.since, state.attempt_number + 1, failure.cause
                )
        log.debug(
            "connect_retry",
            operation=operation,
            cause=failure.cause,
            status_code=failure.status_code,
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
        )
        if self._on_retry is not None:
            try:
                self._on_retry(failure.cause, operation)
            except Exception as exc:  # noqa: BLE001 - a metrics hook must never break a call
                log.warning("on_retry_hook_failed", operation=operation, error=repr(exc))

    # -- the throttle gate ---------------------------------------------------------------------

    def _jitter(self, wait: float) -> float:
        # Above the requested wait only: spreads the threads that queued behind one 429.
        return self._random.uniform(0.0, min(1.0, max(0.05, wait * 0.1)))

    def _close_gate(self, seconds: float) -> None:
        with self._gate_lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def _pass_gate(self) -> None:
        with self._gate_lock:
            remaining = self._not_before - self._clock()
        if remaining <= 0:
            return
        if remaining > self.settings.retry_after_max:
            raise TransientError(
                f"Connect asked to wait {remaining:.0f} s (throttled)",
                retry_after=remaining,
                cause=THROTTLED,
            )
        self._pause(
            getattr(self._operation, "name", None) or "call", remaining + self._jitter(remaining)
        )
