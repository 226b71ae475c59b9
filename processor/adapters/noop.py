"""The ``noop`` adapter: approve without calling any vendor.

For preview and test connections, where a subscription exists only in the marketplace and there is
no vendor record to end. Every step (terminate, suspend, purge) succeeds at once.

It declares :attr:`Idempotency.KEY` because repeating a call that does nothing is harmless, which is
also why it offers no ``status`` read: the engine only reads status after an ambiguous outcome from
a vendor without idempotency, and this adapter is neither ambiguous nor without idempotency. A
status read would have to invent an answer.

It takes no options; any key is an error, so that a typo meant for another adapter type is caught.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processor.adapters.base import AdapterError, Idempotency, Terminated, VendorCall

__all__ = ["NoopAdapter"]


class NoopAdapter:
    """``NoopAdapter(options)``: ``options`` must be empty."""

    idempotency = Idempotency.KEY

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        for key in options or {}:
            raise AdapterError(f"option '{key}': unknown option; the noop adapter takes no options")
        self.name = "noop"

    def terminate(self, call: VendorCall) -> Terminated:
        return Terminated("noop")

    def suspend(self, call: VendorCall) -> Terminated:
        return Terminated("noop")

    def purge(self, call: VendorCall) -> Terminated:
        return Terminated("noop")

    def check_call(self, operation: str, call: VendorCall) -> str | None:
        """Any id will do: nothing is sent anywhere (the default id rule is for vendors)."""
        return None

    def __repr__(self) -> str:
        return f"NoopAdapter(name={self.name!r})"
