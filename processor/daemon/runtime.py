"""Wiring: build the journal, the gateway, the adapters and the engine from a :class:`Config`.

:func:`assemble` is the one wiring, used by the daemon, ``--once`` (:func:`build_runtime`) and the
EaaS application (:func:`processor.eaas.runtimes.build_eaas_runtime`), which differ only in how
they reach Connect. Every failure here is a start-up failure with a message naming what is wrong
(exit status 2 from the CLI), and whatever was opened before it is closed: never a half-built
processor, never a leaked pool or session.
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
    "assemble",
    "load_adapters",
    "gateway_settings",
    "read_timeout",
    "selector_for",
    "make_owner",
    "share_rate_limits",
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
    """The configured adapters; when one fails to load, those loaded before it are closed."""
    from processor.adapters.registry import load_adapter

    adapters: dict[str, VendorAdapter] = {}
    for name, spec in config.adapters.items():
        try:
            adapters[name] = load_adapter(spec.type, spec.options, name=name)
        except AdapterError as exc:
            _close_adapters(adapters)
            raise ConfigError(config.source, f"adapters.{name}", str(exc)) from None
        except BaseException:
            _close_adapters(adapters)
            raise
    return adapters


def share_rate_limits(
    config: Config, adapters: Mapping[str, VendorAdapter], journal: Journal
) -> None:
    """Hand each rate-limited adapter the journal's shared slots, where the journal has them
    (PostgreSQL) and the adapter does not say ``rate.shared: false``; the adapters and the journal
    never import each other, so this is where they meet (see :mod:`processor.adapters.rate`).
    Raises ConfigError for ``rate.shared: true`` with a journal that cannot share (SQLite)."""
    from processor.adapters.rate import RateLimit
    from processor.journal.rate_slots import shared_rate_slots

    slots = shared_rate_slots(journal)
    for name, adapter in adapters.items():
        rate = getattr(adapter, "rate", None)
        if not isinstance(rate, RateLimit):
            continue
        wanted = rate.settings.shared
        if wanted and slots is None:
            raise ConfigError(
                config.source,
                f"adapters.{name}",
                f"adapter '{name}' ({config.adapters[name].type}): option 'rate.shared': true "
                "needs a PostgreSQL journal, shared by the replicas; "
                "a SQLite journal is one host's and its limit each process's own (remove the "
                "option, or set it to false)",
            )
        rate.share(name, slots.take if slots is not None and wanted is not False else None)


def _close_adapters(adapters: Mapping[str, VendorAdapter]) -> None:
    for adapter in adapters.values():
        close = getattr(adapter, "close", None)
        if callable(close):
            close()


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
        _close_adapters(self.adapters)
        self.marketplace.close()
        self.journal.close()


def assemble(
    config: Config,
    gateway: Callable[[Metrics], ConnectGateway],
    *,
    clock: Callable[[], object] = utcnow,
    heartbeat: bool = True,
    migrate: bool = True,
    url_as_config_error: bool = False,
) -> Runtime:
    """The runtime for ``config``: adapters, the journal (migrated when it is SQLite and
    ``migrate``, its schema checked), the metrics, the gateway ``gateway`` builds on them, the
    lease heartbeat and the engine. A failure at any point closes what was opened, then raises.

    ``url_as_config_error``: a journal URL :func:`open_journal` cannot read raises
    :class:`ConfigError` (EaaS: nothing is cached, the next task tries again); the CLI keeps the
    ``ValueError`` it has always reported."""
    adapters = load_adapters(config)
    journal: Journal | None = None
    marketplace: ConnectGateway | None = None
    leases: LeaseKeeper | None = None
    try:
        journal = _open_journal(config, clock, url_as_config_error)
        if migrate and config.journal.url.startswith("sqlite"):
            journal.migrate()
        journal.check_schema()
        metrics = Metrics()
        share_rate_limits(config, adapters, journal)
        marketplace = gateway(metrics)
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
        # Only a runtime that acts counts the journal's recent answers for the guard (a latch
        # it sets holds every process): never the dry run, which builds its own engine.
        engine.recall_answers()
    except BaseException:
        if leases is not None:
            leases.close()
        if marketplace is not None:
            marketplace.close()
        if journal is not None:
            journal.close()
        _close_adapters(adapters)
        raise
    return Runtime(config, journal, marketplace, adapters, engine, metrics, leases, owner)


def _open_journal(config: Config, clock: Callable[[], object], as_config: bool) -> Journal:
    try:
        return open_journal(config.journal.url, clock=clock, **config.journal.options)
    except (ValueError, TypeError) as exc:  # a malformed URL; the message shows it redacted
        if not as_config:
            raise
        raise ConfigError(config.source, "journal.url", str(exc)) from None


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

    def gateway(metrics: Metrics) -> ConnectGateway:
        return ConnectGateway(
            gateway_settings(config, api_key),
            on_retry=metrics.on_retry,
            on_call=metrics.on_connect_call,
        )

    return assemble(config, gateway, clock=clock, heartbeat=heartbeat, migrate=migrate)
