"""What the gateway is configured with (:class:`GatewaySettings`) and what it lists
(:class:`Selector`).

The selector renders to RQL with connect-openapi-client's ``R`` objects. Values are written into
the query string as they are, so the selector refuses values that could change the query's
structure (RQL metacharacters, whitespace): an id list coming from a command line cannot widen
what the processor acts on. Datetimes must be timezone-aware and are written in UTC with a ``Z``
suffix, because a ``+00:00`` offset in a query string reads as a space to most servers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connect.client.rql import R

from processor import __version__
from processor.model import ENVIRONMENTS

__all__ = ["GatewaySettings", "Selector", "rql_datetime", "DEFAULT_ENDPOINT"]

DEFAULT_ENDPOINT = "https://api.connect.cloudblue.com/public/v1"

# Characters that would end or restructure an RQL value: separators, brackets, logic, quoting.
_UNSAFE_VALUE = re.compile(r"[\s(),&|;=\"'%]")


@dataclass(frozen=True)
class GatewaySettings:
    """Connection and retry settings of :class:`~processor.marketplace.Marketplace`.

    ``api_key`` is the whole ``Authorization`` value (``ApiKey SU-...:secret``); a bare
    ``SU-...:secret`` gets the ``ApiKey`` prefix. It is left out of ``repr``.
    """

    endpoint: str = DEFAULT_ENDPOINT
    api_key: str = field(default="", repr=False)
    timeout_connect: float = 10.0
    timeout_read: float = 60.0
    max_attempts: int = 6  # per call, the first included
    backoff_base: float = 0.5  # seconds; full-jitter exponential window starts here
    backoff_max: float = 30.0  # seconds; widest backoff window
    retry_after_max: float = 300.0  # a longer Retry-After ends the call with TransientError
    page_size: int = 100
    verify: bool | str = True  # TLS verification, or the path of a CA bundle
    user_agent: str = f"connect-cancel-processor/{__version__}"
    connections: int = 16  # kept-alive connections to Connect (at least the worker count)

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 1 <= self.page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000 (Connect's largest page)")
        for name in (
            "timeout_connect",
            "timeout_read",
            "backoff_base",
            "backoff_max",
            "retry_after_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def authorization(self) -> str:
        key = self.api_key.strip()
        return f"ApiKey {key}" if key.startswith("SU-") else key


def rql_datetime(value: datetime) -> str:
    """An aware datetime as an RQL value: UTC, ISO 8601, ``Z`` suffix (URL-safe)."""
    if value.tzinfo is None:
        raise ValueError("datetimes in RQL filters must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _values(name: str, values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(str(v) for v in values)
    for value in out:
        if not value or _UNSAFE_VALUE.search(value):
            raise ValueError(f"{name}: {value!r} is not a valid identifier")
    return out


@dataclass(frozen=True)
class Selector:
    """Which pending cancel requests to list. Empty fields do not narrow."""

    products: tuple[str, ...] = ()
    marketplaces: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()  # connection types: preview, test, production
    request_ids: tuple[str, ...] = ()
    created_since: datetime | None = None  # inclusive
    created_until: datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        for name in ("products", "marketplaces", "environments", "request_ids"):
            object.__setattr__(self, name, _values(name, getattr(self, name)))
        unknown = set(self.environments) - set(ENVIRONMENTS)
        if unknown:
            raise ValueError(
                f"environments: unknown {', '.join(sorted(unknown))}; expected {ENVIRONMENTS}"
            )
        for name in ("created_since", "created_until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    def rql(self) -> R:
        """The selector's filters (an empty ``R()`` when it selects everything)."""
        query = R()
        if self.products:
            query &= R().asset.product.id.in_(self.products)
        if self.marketplaces:
            query &= R().marketplace.id.in_(self.marketplaces)
        if self.environments:
            query &= R().asset.connection.type.in_(self.environments)
        if self.request_ids:
            query &= R().id.in_(self.request_ids)
        if self.created_since is not None:
            query &= R().created.ge(rql_datetime(self.created_since))
        if self.created_until is not None:
            query &= R().created.lt(rql_datetime(self.created_until))
        return query
