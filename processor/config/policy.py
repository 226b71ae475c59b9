"""The configuration of cancellation policies: named ``policies``, and the ordered ``rules`` that
pick one.

A policy says *how* a configured product's cancellation is carried out: when it takes effect
(``immediate`` or ``end_of_period``), how long the service stays suspended before it is terminated
(``grace_days``), how long data is kept after termination before it is purged (``retention_days``),
whether a person must handle it (``route_to``) or it is refused outright (``refuse``), which request
parameters carry the customer's reason, and which approve template and confirmation text apply.

Rules choose the policy: the first rule whose ``match`` fits the request wins; without a match,
``defaults.policy`` applies, and without that the built-in ``immediate`` policy (terminate now,
approve, no grace, no purge), which is what the processor did before policies existed. Rules never
widen what is processed: ``products`` stays the allow-list, and a rule naming a product that is not
configured is a configuration error rather than a silent no-op.

Validation errors name the key (``policies.premium.route_to: give exactly one of email or
user_id``), as everywhere in :mod:`processor.config.schema`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from processor.config.compat import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "PolicyConfig",
    "RouteConfig",
    "RefuseConfig",
    "RequireReasonConfig",
    "ReasonParamsConfig",
    "MatchConfig",
    "RuleConfig",
    "BUILTIN_POLICY",
    "CONFIRMATION_FIELDS",
]

# Placeholders a confirmation text may use; anything else is refused at start-up, not at the
# moment a customer would have read a broken message.
CONFIRMATION_FIELDS = frozenset(
    {"request_id", "subscription", "policy", "effective_date", "reactivate_until", "delete_on"}
)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MAX_CUSTOMER_TEXT = 1000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _customer_text(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be empty: the customer reads it")
    if len(text) > _MAX_CUSTOMER_TEXT:
        raise ValueError(f"{what} is longer than {_MAX_CUSTOMER_TEXT} characters")
    return text


class RouteConfig(_Section):
    """Send the request to a person: assign it on Connect, post one note, leave it pending."""

    email: str | None = None
    user_id: str | None = Field(default=None, description="a Connect user id, UR-...")
    note: str = Field(
        default="This cancellation is handled by a person (customer success); the processor does "
        "not cancel it on its own.",
        description="posted once to the request's conversation",
    )

    @model_validator(mode="after")
    def _one_assignee(self) -> RouteConfig:
        if (self.email is None) == (self.user_id is None):
            raise ValueError("give exactly one of email or user_id")
        if self.email is not None and "@" not in self.email:
            raise ValueError(f"email: {self.email!r} is not an email address")
        _customer_text(self.note, "note")
        return self


class RefuseConfig(_Section):
    """Fail the request on Connect with ``reason`` (the customer reads it); nothing else happens."""

    reason: str

    @field_validator("reason")
    @classmethod
    def _readable(cls, value: str) -> str:
        return _customer_text(value, "reason")


class ReasonParamsConfig(_Section):
    """The request parameters holding the customer's reason code and comment (passed to the
    adapter)."""

    code: str = "cancellation_reason"
    comment: str = "cancellation_comment"


class RequireReasonConfig(_Section):
    """What happens when the reason code parameter is empty."""

    on_missing: Literal["park", "refuse", "proceed"] = "park"
    reason: str = "Please choose a cancellation reason and submit the cancellation again."

    @field_validator("reason")
    @classmethod
    def _readable(cls, value: str) -> str:
        return _customer_text(value, "reason")


class PolicyConfig(_Section):
    timing: Literal["immediate", "end_of_period"] = "immediate"
    no_billing_date: Literal["end_of_month", "immediate", "park"] = Field(
        default="end_of_month",
        description="end_of_period when the subscription has no billing.next_date",
    )
    grace_days: int = Field(
        default=0, ge=0, le=3650, description="suspended (data kept) this long before terminating"
    )
    retention_days: int | None = Field(
        default=None,
        ge=0,
        le=3650,
        description="purge this long after termination; null: no purge step",
    )
    template: str | None = Field(
        default=None, description="approve template id; overrides the product's"
    )
    route_to: RouteConfig | None = None
    refuse: RefuseConfig | None = None
    require_reason: RequireReasonConfig | None = None
    reason_params: ReasonParamsConfig = ReasonParamsConfig()
    batch: bool = Field(
        default=False, description="a customer's cancels in one pass go to terminate_batch"
    )
    confirmation: str | None = Field(
        default=None, description="the approved note; placeholders in braces"
    )

    @field_validator("confirmation")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = _customer_text(value, "confirmation")
        unknown = sorted({name for name in _PLACEHOLDER.findall(text)} - CONFIRMATION_FIELDS)
        if unknown:
            known = ", ".join("{" + name + "}" for name in sorted(CONFIRMATION_FIELDS))
            raise ValueError(f"unknown placeholder(s) {', '.join(unknown)}; known: {known}")
        return text

    @model_validator(mode="after")
    def _coherent(self) -> PolicyConfig:
        if self.refuse is not None and self.route_to is not None:
            raise ValueError(
                "refuse and route_to exclude each other: a refused request goes to nobody"
            )
        if self.batch and (self.grace_days or self.timing == "end_of_period"):
            # A batch is one terminate call for requests that are all due now; timed steps are
            # per request (each has its own date), so the combination would silently not batch.
            raise ValueError("batch applies to immediate terminations without grace_days")
        return self

    @property
    def purges(self) -> bool:
        return self.retention_days is not None


BUILTIN_POLICY = PolicyConfig()


def _listify(value: Any) -> Any:
    """``product: PRD-1`` reads as ``product: [PRD-1]``."""
    if isinstance(value, str):
        return [value]
    return value


class MatchConfig(_Section):
    """Every given field must match (and); within a field any listed value matches (or)."""

    product: list[str] = []
    marketplace: list[str] = []
    environment: list[Literal["preview", "test", "production"]] = []
    mpn: list[str] = Field(
        default=[], description="an item of the subscription with this MPN and a quantity"
    )
    customer: list[str] = Field(default=[], description="customer account ids (TA-...)")
    params: dict[str, list[str]] = Field(
        default={}, description="request parameter id -> accepted values"
    )

    @field_validator("product", "marketplace", "environment", "mpn", "customer", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _listify(value)

    @field_validator("params", mode="before")
    @classmethod
    def _param_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _listify(v) for k, v in value.items()}
        return value


class RuleConfig(_Section):
    match: MatchConfig = MatchConfig()
    policy: str
