"""Configuration: one YAML file, overridden by the environment, validated at start-up.

Precedence, lowest first: built-in defaults, the YAML file, ``CANCEL_PROCESSOR_<SECTION>__<KEY>``
environment variables (``__`` separates nesting levels, values parsed as YAML scalars), then the two
well-known Connect variables ``CONNECT_ENDPOINT`` and ``CONNECT_API_KEY``.

Secrets are never read from the YAML file itself: the file names an environment variable
(``api_key_env``) or a file (``api_key_file``) that holds the secret. A bad file raises
:class:`ConfigError` naming the file, the key and what was expected; the CLI turns that into exit
status 2.

Cancellation policies (``policies``, ``rules``, ``defaults.policy``) are modelled in
:mod:`processor.config.policy`; the cross-references between them are checked here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from processor.config.compat import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from processor.config.env import ENV_PREFIX
from processor.config.env import blamed as _blamed
from processor.config.env import env_overrides as _env_overrides
from processor.config.env import merge as _merge
from processor.config.errors import describe as _describe
from processor.config.errors import hide as _hide
from processor.config.errors import secret_values as _secret_values
from processor.config.hosts import is_loopback_host
from processor.config.policy import BUILTIN_POLICY, PolicyConfig, RuleConfig

__all__ = [
    "ConfigError",
    "Config",
    "ConnectConfig",
    "JournalConfig",
    "ProcessingConfig",
    "AdapterConfig",
    "ProductConfig",
    "LogConfig",
    "HttpConfig",
    "GuardConfig",
    "ReconcileConfig",
    "PolicyConfig",
    "RuleConfig",
    "load_config",
    "require_products",
    "read_secret",
    "configured_secrets",
    "ENV_PREFIX",
]


class ConfigError(Exception):
    """Configuration is unusable. ``str()`` names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Section):
    max_attempts: int = Field(
        6, ge=1, le=50, description="attempts per Connect call, first included"
    )
    backoff_base: float = Field(
        0.5, gt=0, description="seconds; full-jitter exponential backoff base"
    )
    backoff_max: float = Field(30.0, gt=0, description="seconds; longest single backoff")
    retry_after_max: float = Field(
        300.0, gt=0, description="a longer Retry-After defers the request"
    )


class ConnectConfig(_Section):
    endpoint: str = "https://api.connect.cloudblue.com/public/v1"
    api_key_env: str = "CONNECT_API_KEY"
    api_key_file: str | None = None
    timeout_connect: float = Field(10.0, gt=0)
    # Shorter than processing.shutdown_timeout, so a stop never waits on a read (see runtime).
    timeout_read: float = Field(20.0, gt=0)
    page_size: int = Field(100, ge=1, le=1000)
    verify: bool | str = Field(True, description="TLS verification, or a CA bundle path")
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
            # As for the vendor's API: a private CA is trusted by naming it, never by trusting anyone.
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


class JournalConfig(_Section):
    url: str = "sqlite:///cancel-processor.db"
    lease_seconds: float = Field(
        60.0, gt=1, description="a claim expires after this long without a heartbeat"
    )
    pool_size: int = Field(8, ge=1, le=256, description="PostgreSQL connection pool size")
    holder_wait: float = Field(
        600.0,
        gt=0,
        description="seconds a request waits for an earlier holder that is still alive (frozen past "
        "its lease) and may still send a call the vendor cannot deduplicate, before it is parked for a person",
    )

    @property
    def options(self) -> dict[str, float | int]:
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
        5, ge=1, description="consecutive transient vendor failures that open the circuit"
    )
    reset_after: float = Field(
        30.0, gt=0, description="seconds before one probe call is let through"
    )


class ProcessingConfig(_Section):
    concurrency: int = Field(8, ge=1, le=256)
    poll_interval: float = Field(30.0, gt=0)
    poll_jitter: float = Field(
        0.2, ge=0, le=1, description="share of poll_interval added at random"
    )
    max_attempts: int = Field(
        5, ge=1, description="definite vendor errors before a request is poison"
    )
    poison: Literal["park", "fail"] = "park"
    poison_reason: str = (
        "The cancellation could not be completed by the vendor; please contact support."
    )
    malformed: Literal["park", "fail"] = "park"
    malformed_reason: str = (
        "The cancellation request is missing data the vendor needs; please contact support."
    )
    retry_base: float = Field(30.0, gt=0, description="seconds; first retry delay of a request")
    retry_max: float = Field(3600.0, gt=0)
    once_max_wait: float = Field(
        120.0, ge=0, description="--once waits this long for retries that are due soon"
    )
    shutdown_timeout: float = Field(30.0, gt=0)
    notes: bool = True
    subscription_param: str = "subscription_id"
    batch_max: int = Field(
        50, ge=2, le=1000, description="most requests in one terminate_batch call"
    )
    timers_per_pass: int = Field(
        500, ge=1, description="due timers (suspend end, purge) handled per pass"
    )
    circuit: CircuitConfig = CircuitConfig()


class AdapterConfig(_Section):
    type: str = Field(description="entry-point name (http, noop) or module:Class")
    options: dict[str, Any] = {}


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
        True, description="ask Connect for the product's template if none is set"
    )
    environments: dict[Literal["preview", "test", "production"], str] = {}


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class HttpConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token_env: str = "CANCEL_PROCESSOR_STATUS_TOKEN"


class GuardConfig(_Section):
    """The anomaly guard (processor.engine.guard): a burst of "gone" or "refused" answers latches the
    adapter's circuit until an operator runs ``cancel-processor resume ADAPTER``."""

    enabled: bool = True
    in_a_row: int = Field(
        10, ge=2, description="already_gone (or refused) outcomes in a row that latch the circuit"
    )
    window: int = Field(50, ge=4, le=10_000, description="latest outcomes remembered per adapter")
    share: float = Field(
        0.5, gt=0, lt=1, description="latch when more than this share of a full window is one kind"
    )
    state_file: str | None = Field(
        None,
        description="latches, read by every process and by resume; default: beside an SQLite journal, "
        "else cancel-processor-guard.json in the working directory",
    )

    @model_validator(mode="after")
    def _run_fits_window(self) -> GuardConfig:
        if self.in_a_row > self.window:  # the run is counted within the window: it could never trip
            raise ValueError(f"in_a_row ({self.in_a_row}) must not exceed window ({self.window})")
        return self


class ReconcileConfig(_Section):
    """``cancel-processor reconcile``: how hard it may ask the vendors."""

    concurrency: int = Field(4, ge=1, le=64, description="status reads at the same time")
    rate: float = Field(20.0, gt=0, description="status reads per second, at most")
    # Off by default: a vendor we have never seen is not read in the background unless asked.
    # 1 s is allowed for tests; an hour or more is the sensible range (each run reads every
    # request finished within ``window``, paced by ``rate``).
    every: float | None = Field(
        None, ge=1, description="seconds between scheduled runs in the daemon; null: off"
    )
    window: float = Field(
        7 * 86400.0, gt=0, description="seconds back from now a scheduled run looks"
    )


class Config(_Section):
    connect: ConnectConfig = ConnectConfig()
    journal: JournalConfig = JournalConfig()
    processing: ProcessingConfig = ProcessingConfig()
    adapters: dict[str, AdapterConfig] = {}
    defaults: DefaultsConfig = DefaultsConfig()
    products: dict[str, ProductConfig] = {}
    policies: dict[str, PolicyConfig] = {}
    rules: list[RuleConfig] = []
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    guard: GuardConfig = GuardConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    source: str = Field("<defaults>", exclude=True)

    @field_validator("products", mode="before")
    @classmethod
    def _no_products(cls, value: Any) -> Any:
        # "products:" with nothing under it is YAML's null: the same as none listed, which the
        # commands that process requests refuse by name (require_products).
        return {} if value is None else value

    @model_validator(mode="after")
    def _adapters_exist(self) -> Config:
        known = set(self.adapters)
        refs: list[tuple[str, str | None]] = [("defaults.adapter", self.defaults.adapter)]
        refs += [(f"defaults.environments.{e}", a) for e, a in self.defaults.environments.items()]
        for pid, product in self.products.items():
            refs.append((f"products.{pid}.adapter", product.adapter))
            refs += [
                (f"products.{pid}.environments.{e}", a) for e, a in product.environments.items()
            ]
        for key, name in refs:
            if name is not None and name not in known:
                listed = ", ".join(sorted(known)) or "none defined"
                raise ValueError(
                    f"{key}: adapter {name!r} is not defined under adapters ({listed})"
                )
        for pid, product in self.products.items():
            if product.adapter is None and self.defaults.adapter is None:
                raise ValueError(f"products.{pid}: no adapter and no defaults.adapter")
        return self

    @model_validator(mode="after")
    def _rules_name_known_things(self) -> Config:
        names = ", ".join(sorted(self.policies)) or "none defined"
        refs = [("defaults.policy", self.defaults.policy)]
        refs += [(f"rules[{index}].policy", rule.policy) for index, rule in enumerate(self.rules)]
        for key, name in refs:
            if name is not None and name not in self.policies:
                raise ValueError(f"{key}: policy {name!r} is not defined under policies ({names})")
        for index, rule in enumerate(self.rules):
            # A rule for a product that is not processed would never apply: almost surely a typo.
            unknown = sorted(set(rule.match.product) - set(self.products))
            if unknown:
                raise ValueError(
                    f"rules[{index}].match.product: {', '.join(unknown)} not configured under products"
                )
        return self

    def policy_named(self, name: str) -> PolicyConfig:
        """A policy by name; ``default`` is the built-in immediate policy unless configured."""
        if name in self.policies:
            return self.policies[name]
        if name == "default":
            return BUILTIN_POLICY
        raise KeyError(name)

    @property
    def fallback_policy(self) -> str:
        """The policy of a request no rule matches."""
        return self.defaults.policy or "default"

    def adapter_for(self, product_id: str, environment: str) -> str | None:
        product = self.products.get(product_id)
        if product is None:
            return None
        return (
            product.environments.get(environment)  # type: ignore[call-overload]
            or self.defaults.environments.get(environment)  # type: ignore[call-overload]
            or product.adapter
            or self.defaults.adapter
        )

    def template_for(self, product_id: str, policy: PolicyConfig | None = None) -> str | None:
        """The approve template: the policy's, else the product's, else the default one."""
        if policy is not None and policy.template:
            return policy.template
        product = self.products.get(product_id)
        return (product.template if product else None) or self.defaults.template


def read_secret(*, env: str | None, file: str | None, what: str) -> str | None:
    """A secret from a file (preferred when set) or an environment variable; None when unset.

    Errors name where the secret was looked for, never its value.
    """
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                what, "", f"cannot read the secret file {file}: {exc.strerror}"
            ) from None
        return value or None
    if env:
        return os.environ.get(env) or None
    return None


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load, merge and validate. ``path=None`` means built-in defaults plus the environment."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else "<defaults>"
    data: Any = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(
                source,
                "",
                f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}): "
                "save the file as UTF-8",
            ) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(
                source, "", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(
                source, "", f"expected a mapping at the top level, got {type(data).__name__}"
            )
    origins: dict[tuple[str, ...], str] = {}
    overrides = _env_overrides(environ, origins)
    if overrides:
        data = _merge(data, overrides)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        loc, msg = _describe(exc.errors()[0])
        more = len(exc.errors()) - 1
        msg = _hide(msg, _secret_values(data, environ))
        variable = _blamed(loc, msg, origins)
        where = (
            f"environment variable {variable}" + (f" (over {source})" if path else "")
            if variable
            else source
        )
        raise ConfigError(
            where, loc, msg + (f" (and {more} more problem(s))" if more else "")
        ) from None
    return config.model_copy(update={"source": source})


def require_products(config: Config) -> None:
    """Commands that process requests need at least one product: without any, nothing would ever be
    processed (every request of every other product is left alone), which is surely a mistake."""
    if not config.products:
        raise ConfigError(
            config.source,
            "products",
            "no product is configured, so nothing would ever be "
            "processed: list your product ids under products (see config/processor.example.yaml)",
        )


def configured_secrets(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the configuration names by environment variable (the Connect key, the status
    token, adapters' ``auth.env``), for masking; the values of unset variables are not included."""
    return _secret_values(config.model_dump(), os.environ if environ is None else environ)


def connect_api_key(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The Connect API key: ``CONNECT_API_KEY`` always wins, then the configured env var or file."""
    environ = os.environ if environ is None else environ
    if environ.get("CONNECT_API_KEY"):
        return environ["CONNECT_API_KEY"]
    if config.connect.api_key_file:
        return read_secret(
            env=None,
            file=config.connect.api_key_file,
            what=f"{config.source}: connect.api_key_file",
        )
    return environ.get(config.connect.api_key_env) or None
