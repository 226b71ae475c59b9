"""Wiring: build the journal, the gateway, the adapters and the engine from a :class:`Config`.

Used by the CLI, the EaaS application and the tests, so that all of them run the same objects.
Every failure here is a start-up failure with a message naming what is wrong (exit status 2 from
the CLI), never a half-built processor.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from processor.adapters.base import AdapterError, VendorAdapter
from processor.config.schema import Config, ConfigError, configured_secrets, connect_api_key
from processor.engine.core import Engine, utcnow
from processor.engine.leases import LeaseKeeper
from processor.journal import open_journal
from processor.journal.base import Journal
from processor.marketplace import ConnectGateway, GatewaySettings, Selector
from processor.observe import Metrics, register_secret

__all__ = [
    "Runtime",
    "build_runtime",
    "gateway_settings",
    "read_timeout",
    "selector_for",
    "make_owner",
]


def make_owner() -> str:
    """A worker identity unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def read_timeout(config: Config) -> float:
    """Connect's read timeout, kept under the shutdown budget: a stop must never wait out a read
    longer than ``processing.shutdown_timeout`` (the CLI warns when this cuts the configured one).
    """
    return min(config.connect.timeout_read, config.processing.shutdown_timeout * 0.8)


def gateway_settings(config: Config, api_key: str) -> GatewaySettings:
    c = config.connect
    return GatewaySettings(
        endpoint=c.endpoint,
        api_key=api_key,
        timeout_connect=min(c.timeout_connect, read_timeout(config)),
        timeout_read=read_timeout(config),
        max_attempts=c.retry.max_attempts,
        backoff_base=c.retry.backoff_base,
        backoff_max=c.retry.backoff_max,
        retry_after_max=c.retry.retry_after_max,
        page_size=c.page_size,
        verify=c.verify,
        connections=config.processing.concurrency + 4,
    )


def selector_for(config: Config, **narrowing: object) -> Selector:
    """Poll only configured products (never more), narrowed by command-line selectors."""
    products = tuple(config.products)
    raw = narrowing.pop("products", None)
    wanted = tuple(str(p) for p in raw) if isinstance(raw, list | tuple | set | frozenset) else ()
    if wanted:
        unknown = sorted(set(wanted) - set(products))
        if unknown:
            raise ConfigError(config.source, "products", f"not configured: {', '.join(unknown)}")
        products = wanted
    return Selector(products=products, **narrowing)  # type: ignore[arg-type]


def load_adapters(config: Config) -> dict[str, VendorAdapter]:
    from processor.adapters.registry import load_adapter

    adapters: dict[str, VendorAdapter] = {}
    for name, spec in config.adapters.items():
        try:
            adapters[name] = load_adapter(spec.type, spec.options, name=name)
        except AdapterError as exc:
            raise ConfigError(config.source, f"adapters.{name}", str(exc)) from None
    return adapters


@dataclass
class Runtime:
    config: Config
    journal: Journal
    marketplace: ConnectGateway
    adapters: dict[str, VendorAdapter]
    engine: Engine
    metrics: Metrics
    leases: LeaseKeeper | None = None
    owner: str = field(default_factory=make_owner)

    def close(self) -> None:
        if self.leases is not None:
            self.leases.close()
        for adapter in self.adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
        self.marketplace.close()
        self.journal.close()


def build_runtime(
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], object] = utcnow,
    heartbeat: bool = True,
    migrate: bool = True,
) -> Runtime:
    api_key = connect_api_key(config, environ)
    if not api_key:
        raise ConfigError(
            config.source,
            "connect.api_key_env",
            "no Connect API key: set CONNECT_API_KEY"
            + (
                f" (or {config.connect.api_key_env})"
                if config.connect.api_key_env != "CONNECT_API_KEY"
                else ""
            )
            + ", or name a file holding it in connect.api_key_file",
        )
    for secret in (
        api_key,
        *configured_secrets(config, environ),
        urlsplit(config.journal.url).password,
    ):
        register_secret(secret)  # the journal's password: a PostgreSQL URL may carry one
    adapters = load_adapters(config)
    journal = open_journal(config.journal.url, clock=clock, **config.journal.options)
    if migrate and config.journal.url.startswith("sqlite"):
        journal.migrate()
    journal.check_schema()
    metrics = Metrics()
    marketplace = ConnectGateway(
        gateway_settings(config, api_key),
        on_retry=metrics.on_retry,
        on_call=metrics.on_connect_call,
    )
    leases = LeaseKeeper(journal, config.journal.lease_seconds) if heartbeat else None
    owner = make_owner()
    engine = Engine(
        config=config,
        journal=journal,
        marketplace=marketplace,
        adapters=adapters,
        owner=owner,
        metrics=metrics,
        leases=leases,
        clock=clock,  # type: ignore[arg-type]
    )
    return Runtime(config, journal, marketplace, adapters, engine, metrics, leases, owner)
