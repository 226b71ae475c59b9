"""``cancel-processor check -c CONFIG``: is this configuration able to work, before it touches
anything?

One line per check, in this order; each is ``ok``, ``warn``, ``config`` or ``unreachable``:

- ``config``: the file loads and validates; the Connect API key is set;
- ``guard NAME``: an adapter the anomaly guard latched (a warning: it makes no vendor call until
  ``cancel-processor resume NAME``);
- ``adapters``: each adapter loads with its options;
- ``capabilities``: each policy against each adapter it can reach (by its rules, the products and
  connection types they cover): ``grace_days`` needs ``suspend``, ``retention_days`` needs
  ``purge``. Without this a request would start and be parked later;
- ``connect``: an authenticated read (the pending count) with this key;
- ``product PRD-...``: visible to this key, and its approve template found (the configured one, or
  the product's default when ``lookup_template`` is on);
- ``adapter NAME``: the adapter's own probe when it has one (``http``: see
  the adapter's ``probe()``; also what ``/readyz`` asks).

Exit status: 0 all good (warnings allowed), 2 any configuration problem, else 3 when something
could not be reached. ``--format json`` prints ``{"status": n, "checks": [...]}``. ``run`` calls
:func:`for_run` at start: the checks without network stop it on a problem (2); the remote ones run
in the background and are logged, because the daemon rides out outages on its own and must
restart fast after a crash. ``run --once`` then calls :func:`for_once`: the key and the selected
products, with Connect, before anything is claimed (2 or 3 at once, never a silent 0).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from processor.adapters.base import VendorAdapter, supports
from processor.config.schema import Config, ConfigError, connect_api_key, load_config
from processor.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE
from processor.marketplace import (
    ConnectGateway,
    MarketplaceError,
    NotFound,
    TransientError,
    Unauthorized,
)
from processor.observe import mask, register_secret

__all__ = [
    "Check",
    "configure_parser",
    "exit_status",
    "for_once",
    "for_run",
    "probe_adapter",
    "run",
    "run_checks",
]

Status = Literal["ok", "warn", "config", "unreachable"]
_ENVIRONMENTS = ("preview", "test", "production")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


def exit_status(checks: Iterable[Check]) -> int:
    statuses = {c.status for c in checks}
    return (
        EXIT_CONFIG
        if "config" in statuses
        else EXIT_UNREACHABLE
        if "unreachable" in statuses
        else EXIT_OK
    )


def run_checks(
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    remote: bool = True,
    connect: bool = True,
) -> list[Check]:
    """Every check for a loaded configuration; ``remote=False`` skips Connect and the vendors,
    ``connect=False`` Connect only (``run --once`` has checked it already)."""
    from processor.daemon.runtime import load_adapters

    checks = [Check("config", "ok", f"{config.source} is valid"), *_latches(config)]
    api_key = connect_api_key(config, environ)
    if not api_key:
        checks.append(
            Check("connect key", "config", f"no Connect API key: set {config.connect.api_key_env}")
        )
    try:
        adapters = load_adapters(config)
    except Exception as exc:  # noqa: BLE001 - an adapter's constructor may raise anything
        return [*checks, Check("adapters", "config", mask(str(exc)))]
    checks.append(
        Check(
            "adapters",
            "ok",
            ", ".join(f"{n} ({type(a).__name__})" for n, a in sorted(adapters.items())),
        )
    )
    try:
        checks += _capabilities(config, adapters)
        if remote and connect and api_key:
            register_secret(api_key)
            checks += _connect(config, api_key)
        if remote:
            checks += [probe_adapter(name, adapter) for name, adapter in sorted(adapters.items())]
    finally:
        for adapter in adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
    return checks


def _latches(config: Config) -> list[Check]:
    """An adapter the anomaly guard latched makes no vendor call until resumed: said here."""
    from processor.engine.guard import latched

    try:
        found = latched(config)
    except OSError as exc:
        return [Check("guard", "warn", mask(str(exc)))]
    return [
        Check(f"guard {name}", "warn", f"latched since {latch.get('since')}: {latch.get('reason')}")
        for name, latch in sorted(found.items())
    ]


def _reachable_adapters(config: Config, policy: str) -> set[str]:
    """The adapters a policy can run on: products and connection types its rules (or the default)
    cover."""
    combos: set[tuple[str, str]] = set()
    everything = {(p, e) for p in config.products for e in _ENVIRONMENTS}
    if config.fallback_policy == policy:
        combos |= everything
    for rule in config.rules:
        if rule.policy == policy:
            products: Sequence[str] = rule.match.product or list(config.products)
            environments: Sequence[str] = rule.match.environment or _ENVIRONMENTS
            combos |= {(p, e) for p in products for e in environments}
    return {a for p, e in combos if (a := config.adapter_for(p, e))}


def _capabilities(config: Config, adapters: Mapping[str, VendorAdapter]) -> list[Check]:
    problems = []
    names = sorted({*config.policies, config.fallback_policy})
    for name in names:
        policy = config.policy_named(name)
        if policy.refuse is not None or policy.route_to is not None:
            continue  # never reaches an adapter
        needs = [("suspend", f"grace_days: {policy.grace_days}")] if policy.grace_days else []
        needs += [("purge", f"retention_days: {policy.retention_days}")] if policy.purges else []
        for adapter_name in sorted(_reachable_adapters(config, name)):
            adapter = adapters.get(adapter_name)
            for method, why in needs:
                if adapter is not None and not supports(adapter, method):
                    problems.append(
                        Check(
                            f"policy {name}",
                            "config",
                            f"{why} needs {method}, but adapter '{adapter_name}' has no {method}",
                        )
                    )
    return problems or [
        Check("capabilities", "ok", f"every policy fits its adapters ({', '.join(names)})")
    ]


def _connect(
    config: Config,
    api_key: str,
    watch: Callable[[ConnectGateway], Callable[[], None]] | None = None,
) -> list[Check]:
    from processor.daemon.runtime import gateway_settings, selector_for

    # Two attempts, short waits: a check answers in seconds, it does not ride out an outage.
    retry = config.connect.retry.model_copy(
        update={"max_attempts": 2, "backoff_base": 0.2, "backoff_max": 1.0}
    )
    quick = config.model_copy(
        update={"connect": config.connect.model_copy(update={"retry": retry})}
    )
    marketplace = ConnectGateway(gateway_settings(quick, api_key))
    unwatch = watch(marketplace) if watch is not None else None
    try:
        try:
            pending = marketplace.count_pending(selector_for(config))
        except (Unauthorized, NotFound) as exc:
            return [Check("connect", "config", f"{config.connect.endpoint}: {mask(str(exc))}")]
        except (TransientError, MarketplaceError) as exc:
            return [Check("connect", "unreachable", f"{config.connect.endpoint}: {mask(str(exc))}")]
        checks = [
            Check(
                "connect",
                "ok",
                f"{config.connect.endpoint}: {pending} pending cancels for these products",
            )
        ]
        return checks + [_product(config, marketplace, pid) for pid in sorted(config.products)]
    finally:
        if unwatch is not None:
            unwatch()
        marketplace.close()


def _get_template(marketplace: ConnectGateway, product_id: str, template_id: str) -> Any:
    """One product template, read once (the gateway's ``_read`` retries it)."""
    return marketplace.client.products[product_id].templates[template_id].get(**marketplace._http)


def _product(config: Config, marketplace: ConnectGateway, product_id: str) -> Check:
    name = f"product {product_id}"
    wanted = {
        t
        for t in (config.template_for(product_id), *(p.template for p in config.policies.values()))
        if t
    }
    try:
        found = marketplace._read(  # the gateway's retrying read; a product and its templates
            "get_product", lambda: marketplace.client.products[product_id].get(**marketplace._http)
        )
        missing = []
        for template in sorted(wanted):
            try:
                marketplace._read(
                    "get_template",
                    functools.partial(_get_template, marketplace, product_id, template),
                )
            except NotFound:
                missing.append(template)
        default = None
        if config.template_for(product_id) is None:
            default = (
                marketplace.default_template(product_id)
                if config.defaults.lookup_template
                else None
            )
            if default is None:
                return Check(
                    name, "config", "no approve template: none configured and none found on Connect"
                )
    except NotFound:
        return Check(
            name, "config", "not visible to this API key (a typo, or another account's product)"
        )
    except Unauthorized as exc:
        return Check(name, "config", mask(str(exc)))
    except MarketplaceError as exc:
        return Check(name, "unreachable", mask(str(exc)))
    if missing and config.template_for(product_id) in missing:
        return Check(
            name, "config", f"approve template {', '.join(missing)} not found for this product"
        )
    title = found.get("name") or product_id
    uses = default or config.template_for(product_id)
    extra = f"; policy templates not on this product: {', '.join(missing)}" if missing else ""
    return Check(name, "warn" if missing else "ok", f"{title}; approve template {uses}{extra}")


def probe_adapter(name: str, adapter: VendorAdapter) -> Check:
    """The adapter's own probe as a check named ``adapter NAME`` (``ok`` without a probe); also
    what ``/readyz`` asks (:func:`processor.ops.readiness.vendor_checks`)."""
    probe = getattr(adapter, "probe", None)
    if not callable(probe):
        return Check(f"adapter {name}", "ok", f"{type(adapter).__name__}: nothing to probe")
    try:
        result = probe()
    except Exception as exc:  # noqa: BLE001 - a custom adapter's probe may raise anything
        return Check(
            f"adapter {name}",
            "unreachable",
            mask(f"probe raised {type(exc).__name__}: {exc}")[:300],
        )
    found = getattr(result, "status", "unreachable")
    status = cast(Status, found) if found in ("ok", "config", "unreachable") else "warn"
    return Check(f"adapter {name}", status, mask(str(getattr(result, "detail", result))))


# -- the command -----------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CANCEL_PROCESSOR_CONFIG"),
        help="YAML configuration file (env CANCEL_PROCESSOR_CONFIG)",
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        checks = [Check("config", "config", mask(str(exc)))]
    else:
        checks = run_checks(config)
    status = exit_status(checks)
    if args.format == "json":
        print(json.dumps({"status": status, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"{check.status.upper():<11} {check.name:<{width}}  {check.detail}")
    return status


def for_run(
    config: Config, environ: Mapping[str, str] | None = None, *, connect: bool = True
) -> int:
    """``run``'s preflight. The checks that need no network (configuration, adapters, capabilities)
    run first and stop it on a problem (2). Connect, the products and the vendor probes then run in
    the background and are logged: a daemon restarted after a crash, or during a Connect outage,
    starts at once instead of waiting seconds for reads that its own retries cover anyway.
    ``connect=False`` leaves Connect and the products to :func:`for_once`, which reads them before
    any work: the same reads twice would only cost Connect calls."""
    checks = run_checks(config, environ, remote=False)
    for check in checks:
        if check.status == "config":
            print(f"cancel-processor: check {check.name}: {check.detail}", file=sys.stderr)
    if exit_status(checks) == EXIT_CONFIG:
        return EXIT_CONFIG
    threading.Thread(
        target=_log_remote, args=(config, environ, connect), name="preflight", daemon=True
    ).start()
    return EXIT_OK


def for_once(
    config: Config,
    products: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    watch: Callable[[ConnectGateway], Callable[[], None]] | None = None,
) -> int:
    """``run --once``'s Connect check, before any work: a backfill must not report success having
    seen nothing. A rejected key or a product the key cannot see is 2 at once (a 401 or a 404 is
    never retried), Connect out of reach 3 (two quick attempts); one line each, on stderr. The
    vendor probes are left out: the engine defers a vendor outage per request. ``watch`` is given
    the gateway and returns what stops watching it (``run`` prints a line while Connect waits)."""
    api_key = connect_api_key(config, environ)
    if not api_key:
        return EXIT_OK  # said by for_run already
    register_secret(api_key)
    wanted = tuple(products) or tuple(config.products)
    scoped = config.model_copy(update={"products": {p: config.products[p] for p in wanted}})
    checks = [c for c in _connect(scoped, api_key, watch) if c.status in ("config", "unreachable")]
    for check in checks:
        print(f"cancel-processor: check {check.name}: {check.detail}", file=sys.stderr)
    return exit_status(checks)


def _log_remote(config: Config, environ: Mapping[str, str] | None, connect: bool) -> None:
    from processor.observe import get_logger

    log = get_logger(component="preflight")
    try:
        # The vendor probes first, without Connect: a rejected token is said at once, not after
        # Connect's reads (seconds, or retries during an outage).
        checks = run_checks(config, environ, connect=False)
        for check in checks:
            if check.name.startswith("adapter ") and check.status not in ("ok", "warn"):
                # One line, on stderr, whatever the log format: the daemon runs on, /readyz
                # answers 503 until a probe succeeds. The detail is masked (no token in it).
                print(
                    f"cancel-processor: warning: {check.name}: probe failed ({check.status}): "
                    f"{check.detail}; running anyway, /readyz is 503 until a probe succeeds",
                    file=sys.stderr,
                    flush=True,
                )
        api_key = connect_api_key(config, environ)
        if connect and api_key:  # no key: run_checks said so already
            register_secret(api_key)
            checks += _connect(config, api_key)
    except Exception as exc:  # noqa: BLE001 - a background check never takes the daemon down
        log.warning("preflight_failed", error=mask(f"{type(exc).__name__}: {exc}")[:300])
        return
    for check in checks:
        if check.status == "config":
            log.error("preflight", check=check.name, status=check.status, detail=check.detail)
        elif check.status != "ok":
            log.warning("preflight", check=check.name, status=check.status, detail=check.detail)
