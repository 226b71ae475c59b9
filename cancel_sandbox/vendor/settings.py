"""What the mock vendor is started with. Everything but the token can also change at run time
through the admin endpoints (mode, faults) or is state (subscriptions)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.vendor.late import LateSettings
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.state import Mode

__all__ = ["DEFAULT_TOKEN", "VendorSettings"]

DEFAULT_TOKEN = "vendor-local-token"


@dataclass
class VendorSettings:
    # Bearer token clients must send. Kept out of repr() so it never lands in a log line.
    token: str = field(default=DEFAULT_TOKEN, repr=False)
    # A second token that may read but not act: actions answer 403 forbidden (a token without the
    # write scope). None: no such token. Kept out of repr() like the token.
    read_only_token: str | None = field(default=None, repr=False)
    # key | natural | read | none: what a repeated call does (see the package docstring).
    mode: Mode | str = Mode.KEY
    # Unknown ids matching this regex exist but refuse termination (422); empty: none do.
    refuse_pattern: str = r"7$"
    # Unknown ids matching this regex do not exist (404); empty: all exist.
    gone_pattern: str = r"^SUB-GONE"
    # Latency, 503, 429 and apply-then-drop for the /v1 API (never for /admin).
    faults: FaultSettings = field(default_factory=FaultSettings)
    # SQLite file that keeps subscriptions, keys and ledger across restarts; None: memory only.
    state_file: str | None = None
    # Time each action takes inside the vendor, after its idempotency key is reserved and before
    # the change: what makes "key in use" (409) observable. Fault latency, by contrast, is spent
    # before the request reaches the vendor at all.
    work_ms: float = 0.0
    # OAuth2 client credentials (see .gates): with a client id, POST /oauth/token issues tokens
    # living token_lifetime seconds and the API takes only those instead of the static token.
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    token_lifetime: float = 300.0
    # At most rate_calls API calls per fixed window of rate_per seconds, then 429; None: no limit.
    rate_calls: int | None = None
    rate_per: float = 1.0
    # Calls applied after their client stopped waiting (see .late); off by default.
    late: LateSettings = field(default_factory=LateSettings)
    # Terminate, suspend and purge accepted (202) and completed later (see .operations); off.
    operations: OperationSettings = field(default_factory=OperationSettings)

    def __post_init__(self) -> None:
        self.mode = Mode(self.mode)
        if not self.token:
            raise ValueError("the vendor token must not be empty")
        if self.work_ms < 0:
            raise ValueError("work_ms must not be negative")
        for name in ("refuse_pattern", "gone_pattern"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise ValueError(f"{name} is not a valid regular expression: {exc}") from None
        self.faults.validate()
        self.late.validate()
        self.operations.validate()
        if self.oauth_client_id is not None and not self.oauth_client_secret:
            raise ValueError("an OAuth2 client id needs a non-empty client secret")
        if not self.token_lifetime > 0:
            raise ValueError("token_lifetime must be positive")
        if self.rate_calls is not None and (self.rate_calls < 1 or not self.rate_per > 0):
            raise ValueError("the rate limit needs rate_calls >= 1 and rate_per > 0")
