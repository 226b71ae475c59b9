"""Decisions from configuration: what to do with a cancel request before anything is done.

The policy is pure (no I/O): given a :class:`CancelRequest` it picks the named policy (the first
matching rule, else ``defaults.policy``, else the built-in immediate one), the adapter, the approve
template, the customer's reason, and one action:

===========  ============================================================================
terminate    carry the cancellation out as the policy's timing, grace and retention say
route        hand it to a person (assign, one note, leave it pending); the processor stops
refuse       fail it on Connect with the policy's customer-readable reason
park         set it aside for a person at the vendor (e.g. a required reason is missing)
ignore       not ours: not a cancel, or a product this processor is not configured for
===========  ============================================================================

The engine does the durable bookkeeping. Order of the checks: ``refuse`` first (nothing else
matters), then ``route_to`` (the person decides, reason or not), then the reason requirement.
``decide(..., released=True)`` is the decision after a person sent a routed request back to the
processor (``cancel-processor proceed``): routing is skipped, everything else applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from processor.config.policy import BUILTIN_POLICY, MatchConfig, PolicyConfig
from processor.config.schema import Config
from processor.model import CancelRequest

__all__ = ["Decision", "Policy", "Action"]

Action = Literal["terminate", "ignore", "refuse", "route", "park"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    adapter: str | None = None
    template: str | None = None
    reason: str | None = None  # why ignored or parked / the customer-readable refusal
    policy_name: str | None = None
    policy: PolicyConfig = BUILTIN_POLICY
    reason_code: str | None = None
    reason_comment: str | None = None

    def describe(self) -> str:
        """One line for logs and the dry run (the engine's plan adds dates)."""
        named = f"policy '{self.policy_name}': " if self.policy_name else ""
        if self.action == "terminate":
            template = self.template or "the product's default template"
            return f"{named}terminate via adapter '{self.adapter}', then approve with {template}"
        if self.action == "route":
            route = self.policy.route_to
            who = (route.email or route.user_id) if route else "?"
            return f"{named}assign to {who}, post one note, leave it pending for a person"
        if self.action == "refuse":
            return f"{named}fail on Connect: {self.reason}"
        if self.action == "park":
            return f"{named}park for a person: {self.reason}"
        return f"ignore: {self.reason}"


class Policy:
    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def schedules(self) -> bool:
        """Whether any policy uses Connect's schedule action (the daemon then watches
        revocations)."""
        policies = [
            self.config.policy_named(self.config.fallback_policy),
            *self.config.policies.values(),
        ]
        return any(p.timing == "end_of_period" for p in policies)

    def select(self, request: CancelRequest) -> tuple[str, PolicyConfig]:
        """The policy for a (configured) request: the first matching rule, else the fallback."""
        for rule in self.config.rules:
            if _matches(rule.match, request):
                return rule.policy, self.config.policies[rule.policy]
        name = self.config.fallback_policy
        return name, self.config.policy_named(name)

    def decide(self, request: CancelRequest, *, released: bool = False) -> Decision:
        if not request.is_cancel:
            return Decision(
                "ignore", reason=f"not a cancel request (type {request.type or 'unknown'})"
            )
        if request.product_id not in self.config.products:
            # Refuse to act for a product this processor is not configured for, even if the API
            # returned it (a mis-scoped API key or a filter bug must not end someone else's
            # subscription).
            return Decision("ignore", reason=f"product {request.product_id} is not configured")
        name, policy = self.select(request)
        base = Decision(
            "terminate",
            adapter=self.config.adapter_for(request.product_id, request.environment),
            template=self.config.template_for(request.product_id, policy),
            policy_name=name,
            policy=policy,
            reason_code=request.param(policy.reason_params.code),
            reason_comment=request.param(policy.reason_params.comment),
        )
        if policy.refuse is not None:
            return replace(base, action="refuse", reason=policy.refuse.reason)
        if policy.route_to is not None and not released:
            return replace(base, action="route")
        required = policy.require_reason
        if required is not None and base.reason_code is None and required.on_missing != "proceed":
            if required.on_missing == "refuse":
                return replace(base, action="refuse", reason=required.reason)
            param = policy.reason_params.code
            why = f"no cancellation reason in parameter '{param}' (policy '{name}' requires one)"
            return replace(base, action="park", reason=why)
        return base


def _matches(match: MatchConfig, request: CancelRequest) -> bool:
    if match.product and request.product_id not in match.product:
        return False
    if match.marketplace and request.marketplace_id not in match.marketplace:
        return False
    if match.environment and request.environment not in match.environment:
        return False
    if match.customer and request.customer_id not in match.customer:
        return False
    if match.mpn and not any(
        item.mpn in match.mpn and _owned(item.quantity) for item in request.items
    ):
        return False
    for param, values in match.params.items():
        # An empty or absent parameter reads as "" so that a rule can match "no value given".
        if (request.param(param) or "") not in values:
            return False
    return True


def _owned(quantity: str) -> bool:
    """An item the subscription holds: a quantity other than zero ("unlimited" counts)."""
    try:
        return float(quantity) != 0
    except ValueError:
        return bool(quantity.strip())
