"""Decisions from configuration: what to do with a cancel request before anything is done.

The policy is pure (no I/O): given a :class:`CancelRequest` it names the adapter, the approve
template and the action. The engine does the durable bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from processor.config import Config
from processor.model import CancelRequest

__all__ = ["Decision", "Policy"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["terminate", "ignore", "refuse"]
    adapter: str | None = None
    template: str | None = None
    reason: str | None = None  # why ignored / the customer-readable refusal

    def describe(self) -> str:
        if self.action == "terminate":
            template = self.template or "the product's default template"
            return f"terminate via adapter '{self.adapter}', then approve with {template}"
        if self.action == "refuse":
            return f"fail on Connect: {self.reason}"
        return f"ignore: {self.reason}"


class Policy:
    def __init__(self, config: Config) -> None:
        self.config = config

    def decide(self, request: CancelRequest) -> Decision:
        if not request.is_cancel:
            return Decision("ignore", reason=f"not a cancel request (type {request.type or 'unknown'})")
        if request.product_id not in self.config.products:
            # Refuse to act for a product this processor is not configured for, even if the API
            # returned it (a mis-scoped API key or a filter bug must not end someone else's subscription).
            return Decision("ignore", reason=f"product {request.product_id} is not configured")
        adapter = self.config.adapter_for(request.product_id, request.environment)
        return Decision("terminate", adapter=adapter, template=self.config.template_for(request.product_id))
