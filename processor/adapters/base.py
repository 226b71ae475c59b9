"""The vendor adapter protocol and the typed outcomes an adapter returns.

An adapter is the vendor's own code: it ends a subscription in the vendor's system. The engine
calls it with a :class:`VendorCall` whose ``idempotency_key`` is the same on every retry of the same
step of the same request, so a vendor that deduplicates by key (Stripe-style) never acts twice.

Outcomes are values, not exceptions: the engine reads each one into an event of its transition
table (:mod:`processor.engine.transitions`), and an adapter's error never skips that table.
The distinction that matters most is *definite* versus *ambiguous*:

- :class:`RetryLater` means the vendor certainly did nothing (it answered 429/503 before acting,
  or the connection was refused): calling again is always safe.
- :class:`Ambiguous` means the call may have acted (timeout after sending, connection dropped
  mid-response): calling again is safe only with an idempotency key, natural idempotency, or a
  status read first. Without those the engine parks the request for a human.

An asynchronous vendor answers a step with :class:`Accepted` (``202`` and an operation to poll):
the step is not done yet. The engine records the operation in the journal before anything else,
never calls the step again for that request, and asks the adapter's optional
``poll(call, operation)`` until it answers :class:`Done` or :class:`OperationFailed` (or the
operation's give-up time passes: parked for a person). ``poll`` changes nothing at the vendor, so
a poll that fails is only asked again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from processor.model import CancelRequest
from processor.urls import segment_problem

__all__ = [
    "Idempotency",
    "VendorCall",
    "Terminated",
    "AlreadyGone",
    "Refused",
    "RetryLater",
    "Ambiguous",
    "Failed",
    "Accepted",
    "Done",
    "Pending",
    "OperationFailed",
    "Outcome",
    "PollAnswer",
    "SubscriptionStatus",
    "VendorAdapter",
    "AdapterError",
    "default_check_call",
    "with_default_check",
]


class Idempotency(str, Enum):
    """What the vendor offers to make a repeated call harmless."""

    KEY = "key"  # honours an Idempotency-Key header
    NATURAL = "natural"  # a repeated terminate answers "already terminated"
    NONE = "none"  # a repeated call acts again


class AdapterError(Exception):
    """An adapter is misconfigured or cannot be loaded (a start-up error, never a request
    outcome)."""


@dataclass(frozen=True, slots=True)
class VendorCall:
    """Everything an adapter needs for one step on one subscription."""

    request: CancelRequest
    subscription_id: str
    idempotency_key: str
    attempt: int = 1
    reason_code: str | None = None
    reason_comment: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Asked just before the request leaves (after any wait inside the adapter: a rate limit, a
    # token fetch): why this call must not be sent any more (the send right was lost, or the call
    # could not leave within one lease of its recorded intent), or None to send. An adapter that
    # waits before sending asks it then and answers :class:`RetryLater` instead of sending; the
    # engine asks it too, before calling the adapter. See "The apply horizon" in docs/design.md.
    may_send: Callable[[], str | None] | None = field(default=None, compare=False)

    def send_problem(self) -> str | None:
        """Why this call must not be sent now (None: send it)."""
        return self.may_send() if self.may_send is not None else None


@dataclass(frozen=True, slots=True)
class Terminated:
    """The vendor ended the subscription (now, by this call or by a replay of it)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class AlreadyGone:
    """The subscription was already ended or does not exist at the vendor: nothing left to do."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The vendor will not end it; ``reason`` is shown to the customer when the request is
    failed."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Definitely not acted upon; try again no sooner than ``after`` seconds (when given)."""

    detail: str = ""
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """The call may or may not have acted.

    ``raised``: set by the engine when the adapter's own code raised or answered something that is
    not an outcome; repeated only as the vendor's mode allows, and counted as a definite error
    toward the poison limit (a bug is not retried forever).
    """

    detail: str = ""
    raised: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """A definite error that is not a refusal (e.g. the vendor answered nonsense or 4xx).

    Counts towards the poison-request limit; never shown to the customer as such.
    """

    detail: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """The vendor accepted the step as an asynchronous operation: it is done (or fails) later.

    ``operation`` is what :meth:`poll` needs to find it again (an operation id, or the URL the
    vendor's ``Location`` header named); the engine keeps it in the journal and never sends the
    step again for the request. ``after``: seconds to the first poll and between polls;
    ``give_up``: seconds from acceptance after which a still pending operation is parked for a
    person (None: the engine's defaults).
    """

    operation: str
    detail: str = ""
    after: float | None = None
    give_up: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A poll: the accepted operation completed; the step happened."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Pending:
    """A poll: the accepted operation is still running; ask again after ``after`` seconds."""

    detail: str = ""
    after: float | None = None


@dataclass(frozen=True, slots=True)
class OperationFailed:
    """A poll: the vendor says the accepted operation failed; the step did not happen.

    A definite vendor failure: the request goes the way of ``processing.poison`` (failed on
    Connect, or parked), never called again by the processor."""

    detail: str


Outcome = Terminated | AlreadyGone | Refused | RetryLater | Ambiguous | Failed | Accepted
# What ``poll`` answers: the operation's state, or why it could not be read (RetryLater: try
# again, nothing is known; Failed: a definite error, e.g. an unknown status value or a 404).
PollAnswer = Done | Pending | OperationFailed | RetryLater | Failed


class SubscriptionStatus(str, Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    PURGED = "purged"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


@runtime_checkable
class VendorAdapter(Protocol):
    """What the engine needs from a vendor. Optional methods are detected with ``hasattr``:

    - ``status(call) -> SubscriptionStatus | RetryLater | Failed``: a status read, used after an
      ambiguous outcome when the vendor has no idempotency.
    - ``suspend(call) -> Outcome`` and ``purge(call) -> Outcome``: grace and retention steps.
    - ``terminate_batch(calls) -> Sequence[Outcome]``: a customer account's cancels as one call.
    - ``poll(call, operation) -> PollAnswer``: the state of an operation the vendor accepted
      (:class:`Accepted`); needed by an adapter that answers :class:`Accepted` at all (without
      it an accepted request is parked: nothing else could tell when it is done). ``call`` is
      the step's own (its idempotency key), with ``call.extra["step"]`` naming the step.
    - ``check_call(operation, call) -> str | None``: why ``call`` must not be sent (an id that would
      change the URL, an empty one), asked before the intent is recorded; nothing is called, and
      the request is parked as malformed (refused instead when ``processing.malformed`` is
      ``fail`` and it is not a purge). An adapter loaded by the registry without one gets
      :func:`default_check_call` (the default subscription id rule,
      :data:`processor.urls.VENDOR_ID`); one that accepts other ids defines its own.
    - ``close()``: release connections at shutdown.
    """

    name: str
    idempotency: Idempotency

    def terminate(self, call: VendorCall) -> Outcome: ...


def default_check_call(operation: str, call: VendorCall) -> str | None:
    """The subscription id rule every adapter keeps unless it says otherwise: the id must be a
    value the vendor could have issued (:data:`processor.urls.VENDOR_ID`), or the request is
    parked before any call."""
    problem = segment_problem("subscription", call.subscription_id)
    return None if problem is None else f"subscription_id {problem}"


def with_default_check(adapter: Any) -> Any:
    """``adapter``, given :func:`default_check_call` when it has no ``check_call`` of its own
    (an object whose attributes cannot be set keeps none)."""
    if not callable(getattr(adapter, "check_call", None)):
        try:
            adapter.check_call = default_check_call
        except AttributeError:
            pass
    return adapter


def has_status_read(adapter: VendorAdapter) -> bool:
    return callable(getattr(adapter, "status", None))


def supports(adapter: VendorAdapter, method: str) -> bool:
    return callable(getattr(adapter, method, None))


def outcome_name(outcome: Outcome | SubscriptionStatus | PollAnswer) -> str:
    """A stable snake_case name for logs, metrics and the journal."""
    if isinstance(outcome, SubscriptionStatus):
        return f"status_{outcome.value}"
    return {
        Terminated: "terminated",
        AlreadyGone: "already_gone",
        Refused: "refused",
        RetryLater: "retry_later",
        Ambiguous: "ambiguous",
        Failed: "failed",
        Accepted: "accepted",
        Done: "operation_done",
        Pending: "operation_pending",
        OperationFailed: "operation_failed",
    }[type(outcome)]
