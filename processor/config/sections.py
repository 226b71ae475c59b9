"""The sections of the configuration: one model per top-level key but the policies and rules.

Each section is frozen and refuses unknown keys (a misspelt key is an error, not a silent default).
How the sections are put together, loaded and cross-checked is :mod:`processor.config.schema`; the
policies and rules are :mod:`processor.config.policy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

from processor.config.compat import BaseModel, ConfigDict, Field, field_validator, model_validator
from processor.config.hosts import is_loopback_host

__all__ = [
    "RetryConfig",
    "ConnectConfig",
    "JournalConfig",
    "JournalOptions",
    "CircuitConfig",
    "ProcessingConfig",
    "AdapterConfig",
    "ProductConfig",
    "DefaultsConfig",
    "LogConfig",
    "HttpConfig",
    "GuardConfig",
    "ReconcileConfig",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Section):
    max_attempts: int = Field(
        default=6, ge=1, le=50, description="attempts per Connect call, first included"
    )
    backoff_base: float = Field(
        default=0.5, gt=0, description="seconds; full-jitter exponential backoff base"
    )
    backoff_max: float = Field(default=30.0, gt=0, description="seconds; longest single backoff")
    retry_after_max: float = Field(
        default=300.0, gt=0, description="a longer Retry-After defers the request"
    )


class ConnectConfig(_Section):
    endpoint: str = "https://api.connect.cloudblue.com/public/v1"
    api_key_env: str = "CONNECT_API_KEY"
    api_key_file: str | None = None
    timeout_connect: float = Field(default=10.0, gt=0)
    # Shorter than processing.shutdown_timeout, so a stop never waits on a read (see runtime).
    timeout_read: float = Field(default=20.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    verify: bool | str = Field(default=True, description="TLS verification, or a CA bundle path")
    # http:// to a host other than loopback sends the API key in clear: refused unless this is set.
    allow_insecure: bool = False
    retry: RetryConfig = RetryConfig()

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("verify")
    @classmethod
    def _ca_bundle(cls, value: bool | str) -> bool | str:
        if value is False:
            # As for the vendor's API: a private CA is trusted by naming it, never by trusting
            # anyone.
            raise ValueError(
                "TLS verification cannot be turned off; to trust a private CA, give the path "
                "of its PEM bundle"
            )
        # A mistyped path would otherwise surface only as a TLS failure on the first call.
        if isinstance(value, str) and not Path(value).is_file():
            raise ValueError("expected true, or the path of an existing CA bundle file (PEM)")
        return value

    @model_validator(mode="after")
    def _clear_text(self) -> ConnectConfig:
        if self.insecure and not self.allow_insecure:
            raise ValueError(
                f"endpoint: {self.endpoint} would send the API key in clear text over http://; "
                "use https://, or on a test network set connect.allow_insecure: true"
            )
        return self

    @property
    def insecure(self) -> bool:
        """A plain-http endpoint on a host other than loopback (the local mocks are fine)."""
        parts = urlsplit(self.endpoint)
        return parts.scheme == "http" and not is_loopback_host(parts.hostname or "")


class JournalOptions(TypedDict):
    """The keyword arguments :func:`~processor.journal.open_journal` takes from this section."""

    pool_size: int
    stall_timeout: float


class JournalConfig(_Section):
    url: str = "sqlite:///cancel-processor.db"
    lease_seconds: float = Field(
        default=60.0, gt=1, description="a claim expires after this long without a heartbeat"
    )
    pool_size: int = Field(default=8, ge=1, le=256, description="PostgreSQL connection pool size")
    holder_wait: float = Field(
        default=600.0,
        gt=0,
        description="seconds a request waits for an earlier holder that is still alive (frozen "
        "past its lease) and may still send a call the vendor cannot deduplicate, before it is "
        "parked for a person",
    )

    @property
    def options(self) -> JournalOptions:
        """What :func:`~processor.journal.open_journal` takes from this section. A transaction
        left idle for half a lease (5 s at most) is a stalled process: PostgreSQL ends it, so its
        row locks do not keep the others from taking its work over once the lease runs out."""
        return {"pool_size": self.pool_size, "stall_timeout": min(5.0, self.lease_seconds / 2)}

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite:///path or postgresql://...")
        return value


class CircuitConfig(_Section):
    failures: int = Field(
        default=5, ge=1, description="consecutive transient vendor failures that open the circuit"
    )
    reset_after: float = Field(
        default=30.0, gt=0, description="seconds before one probe call is let through"
    )


class ProcessingConfig(_Section):
    concurrency: int = Field(default=8, ge=1, le=256)
    poll_interval: float = Field(default=30.0, gt=0)
    poll_jitter: float = Field(
        default=0.2, ge=0, le=1, description="share of poll_interval added at random"
    )
    max_attempts: int = Field(
        default=5, ge=1, description="definite vendor errors before a request is poison"
    )
    poison: Literal["park", "fail"] = "park"
    poison_reason: str = (
        "The cancellation could not be completed by the vendor; please contact support."
    )
    malformed: Literal["park", "fail"] = "park"
    malformed_reason: str = (
        "The cancellation request is missing data the vendor needs; please contact support."
    )
    retry_base: float = Field(
        default=30.0, gt=0, description="seconds; first retry delay of a request"
    )
    retry_max: float = Field(default=3600.0, gt=0)
    once_max_wait: float = Field(
        default=120.0, ge=0, description="--once waits this long for retries that are due soon"
    )
    shutdown_timeout: float = Field(default=30.0, gt=0)
    notes: bool = True
    subscription_param: str = "subscription_id"
    batch_max: int = Field(
        default=50, ge=2, le=1000, description="most requests in one terminate_batch call"
    )
    timers_per_pass: int = Field(
        default=500, ge=1, description="due timers (suspend end, purge) handled per pass"
    )
    circuit: CircuitConfig = CircuitConfig()


DEFAULT_APPLY_HORIZON = 120.0


class AdapterConfig(_Section):
    type: str = Field(description="entry-point name (http, noop) or module:Class")
    options: dict[str, Any] = {}
    # Gateways in front of vendor APIs give up after 30-60 s (AWS API Gateway 29 s, nginx and
    # most load balancers 60 s) while the backend goes on; 120 s covers that with room for the
    # backend's own queue. A vendor that documents a longer processing time needs its own value.
    apply_horizon: float = Field(
        default=DEFAULT_APPLY_HORIZON,
        ge=0,
        le=86_400,
        description="seconds within which the vendor applies (or drops) a call it received: a "
        "status read saying 'not done' is trusted only this long plus the lease after the call "
        "was last sent, and retry --force waits as long (see docs/design.md, the apply horizon)",
    )


class ProductConfig(_Section):
    adapter: str | None = None  # name in `adapters`; default: defaults.adapter
    template: str | None = None  # approve template id; default: the product's fulfillment template
    environments: dict[Literal["preview", "test", "production"], str] = {}  # adapter override


class DefaultsConfig(_Section):
    adapter: str | None = None
    template: str | None = None
    policy: str | None = (
        None  # name in `policies` used when no rule matches; default: built-in immediate
    )
    lookup_template: bool = Field(
        default=True, description="ask Connect for the product's template if none is set"
    )
    environments: dict[Literal["preview", "test", "production"], str] = {}


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class HttpConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    token_env: str = "CANCEL_PROCESSOR_STATUS_TOKEN"


class GuardConfig(_Section):
    """The anomaly guard (processor.engine.guard): a burst of "gone" or "refused" answers latches
    the adapter's circuit until an operator runs ``cancel-processor resume ADAPTER``."""

    enabled: bool = True
    in_a_row: int = Field(
        default=10,
        ge=2,
        description="already_gone (or refused) outcomes in a row that latch the circuit",
    )
    window: int = Field(
        default=50, ge=4, le=10_000, description="latest outcomes remembered per adapter"
    )
    share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="latch when more than this share of a full window is one kind",
    )
    hold: float = Field(
        default=600.0,
        ge=0,
        le=86_400,
        description="seconds an outcome that closes a request on Connect without a termination "
        "(the vendor refused, or answered already gone) waits in the journal before Connect is "
        "told, so that a vendor gone wrong is caught before customers see it; 0: no hold",
    )
    min_sample: int = Field(
        default=10,
        ge=2,
        le=10_000,
        description="final answers within rate_window before the share of refused or already "
        "gone answers among them may latch the adapter",
    )
    rate_window: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="seconds of answers the guard weighs (the sliding window of the rate); "
        "default: hold (or 600 when hold is 0)",
    )
    another_processor: bool = Field(
        default=True,
        description="latch on signs that another processor or a restored journal acts on the "
        "same requests (a request approved on Connect, or terminated at the vendor, behind this "
        "journal's back); false: log them only",
    )
    state_file: str | None = Field(
        default=None,
        description="latches, read by every process and by resume; default: beside an SQLite "
        "journal, else cancel-processor-guard.json in the working directory",
    )

    @property
    def rate_seconds(self) -> float:
        """The sliding window of the rate: ``rate_window``, else the hold, else ten minutes."""
        return self.rate_window or self.hold or 600.0

    @model_validator(mode="after")
    def _run_fits_window(self) -> GuardConfig:
        if self.in_a_row > self.window:  # the run is counted within the window: it could never trip
            raise ValueError(f"in_a_row ({self.in_a_row}) must not exceed window ({self.window})")
        return self


class ReconcileConfig(_Section):
    """``cancel-processor reconcile``: how hard it may ask the vendors."""

    concurrency: int = Field(default=4, ge=1, le=64, description="status reads at the same time")
    rate: float = Field(default=20.0, gt=0, description="status reads per second, at most")
    # Off by default: a vendor we have never seen is not read in the background unless asked.
    # 1 s is allowed for tests; an hour or more is the sensible range (each run reads every
    # request finished within ``window``, paced by ``rate``).
    every: float | None = Field(
        default=None, ge=1, description="seconds between scheduled runs in the daemon; null: off"
    )
    window: float = Field(
        default=7 * 86400.0, gt=0, description="seconds back from now a scheduled run looks"
    )
