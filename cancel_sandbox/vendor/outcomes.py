"""How the mock vendor's answers map to outcomes: the ``outcomes`` option of an ``http`` adapter
pointed at it (the demo, the sandbox, the compose and example configurations).

It lives with the mock on purpose: the ``http`` adapter's defaults name no vendor's error codes,
so that a vendor we have never seen gets no final outcome from a status code alone. A real
vendor's map is written the same way, from that vendor's documentation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MOCK_VENDOR_ASYNC", "MOCK_VENDOR_OUTCOMES", "async_adapter_options"]

# The bodies come from cancel_sandbox.vendor.state and .app: 404 not_found (the subscription does
# not exist), 422 refused (with a customer-facing message), 409 for repeats and keys in flight.
MOCK_VENDOR_OUTCOMES: dict[str, Any] = {
    "404": [{"when": {"error": "not_found"}, "outcome": "already_gone"}, "failed"],
    "409": [
        {"when": {"error": "idempotency_key_in_use"}, "outcome": "retry_later"},  # in flight
        {
            "when": {"error": ["already_terminated", "already_suspended", "already_purged"]},
            "outcome": "already_gone",
        },
        "failed",
    ],
    "422": [{"when": {"error": "refused"}, "outcome": "refused"}, "failed"],
}

# How the mock vendor's asynchronous mode (cancel_sandbox.vendor.operations) looks to the http
# adapter: a 202 with the operation's URL in Location, its state in the poll body's status.
MOCK_VENDOR_ASYNC: dict[str, Any] = {
    "status": 202,
    "location": True,
    "field": "status",
    "done": ["done"],
    "failed": ["failed"],
    "pending": ["pending"],
    "every": 1,
    "give_up": 600,
}


def async_adapter_options(options: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """``options`` of an http adapter for the mock vendor, with terminate, suspend and purge
    asynchronous (``spec`` over :data:`MOCK_VENDOR_ASYNC`)."""
    shape = {**MOCK_VENDOR_ASYNC, **spec}
    return {
        **options,
        "terminate": {"async": shape},
        "suspend": {"async": shape},
        "purge": {"async": shape},
    }
