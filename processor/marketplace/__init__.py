"""The Connect gateway: the only part of the processor that talks to CloudBlue Connect.

- :mod:`.gateway` — :class:`ConnectGateway` (what :class:`Marketplace`, the protocol of
  :mod:`.protocol`, asks of Connect): reads, actions, notes, ambiguous-outcome handling;
- :mod:`.client` — the ConnectClient it talks through (one pool, the environment read once);
- :mod:`.notes` — conversation messages, posted at most once;
- :mod:`.retry` — the single retry layer (backoff, 429 ``Retry-After``, typed errors);
- :mod:`.failures` — what a failed call says: its retry cause, whether it may have acted;
- :mod:`.paging` — keyset paging that never skips a pending request while others are approved;
- :mod:`.settings` — :class:`GatewaySettings` and the request :class:`Selector` (RQL);
- :mod:`.errors` — what callers catch.
"""

from processor.marketplace.errors import (
    ActionRefused,
    MarketplaceError,
    NotFound,
    NotPending,
    Stopping,
    TransientError,
    Unauthorized,
)
from processor.marketplace.gateway import NOTE_MAX_CHARS, ConnectGateway
from processor.marketplace.protocol import Marketplace
from processor.marketplace.retry import OnRetry, parse_retry_after
from processor.marketplace.settings import DEFAULT_ENDPOINT, GatewaySettings, Selector, rql_datetime

__all__ = [
    "ConnectGateway",
    "Marketplace",
    "GatewaySettings",
    "Selector",
    "MarketplaceError",
    "TransientError",
    "Stopping",
    "NotPending",
    "ActionRefused",
    "NotFound",
    "Unauthorized",
    "OnRetry",
    "NOTE_MAX_CHARS",
    "DEFAULT_ENDPOINT",
    "parse_retry_after",
    "rql_datetime",
]
