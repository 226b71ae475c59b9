"""Vendor adapters: the protocol and outcomes, the registry, and the built-in adapters.

The public surface is :data:`__all__`. :class:`HttpAdapter` is imported on first use, because it
pulls in ``requests`` and most importers (the engine, the journal) only need the outcome types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processor.adapters.base import (
    Accepted,
    AdapterError,
    AlreadyGone,
    Ambiguous,
    Done,
    Failed,
    Idempotency,
    OperationFailed,
    Outcome,
    Pending,
    PollAnswer,
    Refused,
    RetryLater,
    SubscriptionStatus,
    Terminated,
    VendorAdapter,
    VendorCall,
    default_check_call,
    has_status_read,
    outcome_name,
    supports,
    with_default_check,
)
from processor.adapters.noop import NoopAdapter
from processor.adapters.registry import ENTRY_POINT_GROUP, available_adapters, load_adapter

if TYPE_CHECKING:
    from processor.adapters.http import HttpAdapter

__all__ = [
    "Accepted",
    "AdapterError",
    "AlreadyGone",
    "Ambiguous",
    "Done",
    "ENTRY_POINT_GROUP",
    "Failed",
    "HttpAdapter",
    "Idempotency",
    "NoopAdapter",
    "OperationFailed",
    "Outcome",
    "Pending",
    "PollAnswer",
    "Refused",
    "RetryLater",
    "SubscriptionStatus",
    "Terminated",
    "VendorAdapter",
    "VendorCall",
    "available_adapters",
    "default_check_call",
    "has_status_read",
    "load_adapter",
    "outcome_name",
    "supports",
    "with_default_check",
]


def __getattr__(name: str) -> Any:
    if name == "HttpAdapter":
        from processor.adapters.http import HttpAdapter

        return HttpAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
