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
from typing import Any

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
from processor.config.permissions import writable_by_others
from processor.config.policy import BUILTIN_POLICY, PolicyConfig, RuleConfig
from processor.config.sections import (
    AdapterConfig,
    ConnectConfig,
    DefaultsConfig,
    GuardConfig,
    HttpConfig,
    JournalConfig,
    LogConfig,
    ProcessingConfig,
    ProductConfig,
    ReconcileConfig,
)

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
    source: str = Field(default="<defaults>", exclude=True)

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
                    f"rules[{index}].match.product: {', '.join(unknown)} not configured under "
                    "products"
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
        unsafe = writable_by_others(path, environ)
        if unsafe is not None:
            raise ConfigError(source, "", unsafe)
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
