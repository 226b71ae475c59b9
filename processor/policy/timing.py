"""The dates of a cancellation: when it takes effect, when it is terminated, when its data goes.

Pure date arithmetic, no I/O. All datetimes are timezone-aware UTC.

- ``effective_at``: access ends. ``immediate``: now. ``end_of_period``: the subscription's
  ``billing.next_date`` (the end of the period already paid for); a date already passed means now.
  Without a billing date the policy's ``no_billing_date`` rule applies: the first instant of the
  next calendar month (UTC), now, or nothing (the engine parks the request for a person).
- ``terminate_at``: ``effective_at + grace_days``. With grace, the service is suspended from
  ``effective_at`` (access off, data kept, the customer may still reactivate) until then.
- ``purge_at``: ``retention_days`` after the *actual* termination, never after the planned one: a
  termination that ran late (an outage, a retry) moves the purge later, never earlier.

A plan is written into the journal record's ``data`` (ISO 8601 text) when the request is first
started and read back for every later step, so the dates promised to the customer in a note do not
move when the configuration changes while a request is under way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.config.policy import PolicyConfig

__all__ = ["Dates", "effective_date", "end_of_month", "iso", "from_iso", "human"]


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human(value: datetime | None) -> str:
    """How a date reads in a note to the customer: unambiguous, in UTC."""
    if value is None:
        return "unknown"
    value = value.astimezone(UTC)
    if (value.hour, value.minute, value.second) == (0, 0, 0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def end_of_month(now: datetime) -> datetime:
    """The first instant of the next calendar month, UTC."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def effective_date(
    policy: PolicyConfig, billing_next_date: datetime | None, now: datetime
) -> tuple[datetime | None, str]:
    """When access ends, and where that date came from (for the journal and the dry run).

    None only for ``end_of_period`` with no billing date and ``no_billing_date: park``.
    """
    if policy.timing == "immediate":
        return now, "immediate"
    if billing_next_date is not None:
        if billing_next_date <= now:
            return now, "billing period already ended"
        return billing_next_date, "subscription billing.next_date"
    if policy.no_billing_date == "end_of_month":
        return end_of_month(now), "no billing date: end of the calendar month"
    if policy.no_billing_date == "immediate":
        return now, "no billing date: immediate"
    return None, "no billing date"


@dataclass(frozen=True, slots=True)
class Dates:
    """A request's plan. ``purge_at`` is the planned purge (from the planned termination) until the
    termination is recorded, then the real one."""

    effective_at: datetime
    terminate_at: datetime
    purge_at: datetime | None

    @classmethod
    def plan(cls, policy: PolicyConfig, effective_at: datetime) -> Dates:
        terminate_at = effective_at + timedelta(days=policy.grace_days)
        retention = policy.retention_days
        purge_at = terminate_at + timedelta(days=retention) if retention is not None else None
        return cls(effective_at, terminate_at, purge_at)

    @property
    def graced(self) -> bool:
        return self.terminate_at > self.effective_at

    @property
    def reactivate_until(self) -> datetime | None:
        """Until when the customer can still get the service back (only with a grace period)."""
        return self.terminate_at if self.graced else None

    def terminated(self, at: datetime, retention_days: int | None) -> Dates:
        """The plan once the vendor terminated at ``at``: the purge counts from the real moment."""
        if retention_days is None:
            return self
        purge_at = max(at, self.terminate_at) + timedelta(days=retention_days)
        return Dates(self.effective_at, self.terminate_at, purge_at)

    def delete_on(self) -> datetime:
        """When the data is gone for good: the purge, or the termination when nothing is
        retained."""
        return self.purge_at or self.terminate_at

    def as_data(self) -> dict[str, str | None]:
        return {
            "effective_at": iso(self.effective_at),
            "terminate_at": iso(self.terminate_at),
            "purge_at": iso(self.purge_at) if self.purge_at else None,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Dates | None:
        effective_at, terminate_at = (
            from_iso(data.get("effective_at")),
            from_iso(data.get("terminate_at")),
        )
        if effective_at is None or terminate_at is None:
            return None
        return cls(effective_at, terminate_at, from_iso(data.get("purge_at")))
