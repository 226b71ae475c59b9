"""How the mock vendor's answers map to outcomes: the ``outcomes`` option of an ``http`` adapter
pointed at it (the demo, the sandbox, the compose and example configurations).

It lives with the mock on purpose: the ``http`` adapter's defaults name no vendor's error codes,
so that a vendor we have never seen gets no final outcome from a status code alone. A real
vendor's map is written the same way, from that vendor's documentation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MOCK_VENDOR_OUTCOMES"]

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
