"""``cancel-processor mock-marketplace``: serve the mock Connect marketplace in the foreground.

Every option can also come from the environment (``MOCK_CONNECT_<OPTION>``, named in ``--help``).
The clock is a :class:`MockClock` following real time, so ``POST /admin/clock`` can move a running
demo forward. Exit status 0 after a clean shutdown (Ctrl-C), 2 for a bad seed or state file.
On start it prints what it serves: the URLs, the counts, each product's approve template id and
the key's identifier (never the secret).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from cancel_sandbox.devops.devloop import DevloopError, Served, add_options, prepare
from cancel_sandbox.devops.variables import VariablesError
from cancel_sandbox.faults import CREATED_PRECISIONS, FaultSettings
from cancel_sandbox.marketplace import (
    MarketplaceSettings,
    MockClock,
    SeedError,
    approve_template,
    create_app,
)
from processor.ops.serving import serve

__all__ = ["configure_parser", "run"]

ENV_PREFIX = "MOCK_CONNECT_"


def _env(name: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise SystemExit(f"{ENV_PREFIX}{name}: cannot read {raw!r} as {cast.__name__}") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    def add(
        flag: str, env: str, default: Any, cast: Callable[[str], Any], help_text: str, **kw: Any
    ) -> None:
        parser.add_argument(
            flag,
            default=_env(env, default, cast),
            type=cast,
            help=f"{help_text} (env {ENV_PREFIX}{env}; default %(default)s)",
            **kw,
        )

    add("--host", "HOST", "127.0.0.1", str, "address to listen on")
    add("--port", "PORT", 8181, int, "port to listen on")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(ENV_PREFIX + "API_KEY"),
        help="the exact Authorization header value clients must send, 'ApiKey <id>:<secret>' "
        f"(env {ENV_PREFIX}API_KEY; default the local development key)",
    )
    add(
        "--generate",
        "GENERATE",
        50,
        int,
        "pending cancel requests to generate at start",
        metavar="N",
    )
    add("--seed", "SEED", 7, int, "seed of the generated data (deterministic)", metavar="S")
    add(
        "--seed-file",
        "SEED_FILE",
        None,
        str,
        "YAML/JSON seed file (see config/seed.example.yaml)",
        metavar="PATH",
    )
    parser.add_argument(
        "--import",
        dest="import_files",
        action="append",
        default=[p for p in os.environ.get(ENV_PREFIX + "IMPORT", "").split(os.pathsep) if p],
        metavar="PATH",
        help="a file of Connect request objects exactly as the API returns them (one object, a "
        "JSON array or JSON lines), served back unchanged; repeatable "
        f"(env {ENV_PREFIX}IMPORT, paths separated by '{os.pathsep}')",
    )
    add(
        "--state-file",
        "STATE_FILE",
        None,
        str,
        "SQLite file keeping the state across restarts",
        metavar="PATH",
    )
    add("--latency-ms", "LATENCY_MS", 0.0, float, "latency added to every API call")
    add("--error-rate", "ERROR_RATE", 0.0, float, "share of API calls answered 503 before acting")
    add(
        "--throttle-rate",
        "THROTTLE_RATE",
        0.0,
        float,
        "share of API calls answered 429 before acting",
    )
    add("--retry-after", "RETRY_AFTER", 1.0, float, "seconds sent in Retry-After with a 429")
    add(
        "--drop-rate",
        "DROP_RATE",
        0.0,
        float,
        "share of API calls applied, then the connection dropped",
    )
    add(
        "--created-precision",
        "CREATED_PRECISION",
        "exact",
        str,
        "how created is compared against how it is served: "
        + "; ".join(f"{k}: {v}" for k, v in CREATED_PRECISIONS.items()),
        choices=list(CREATED_PRECISIONS),
    )
    add_options(parser)  # HTTPS and the DevOps surface: cancel_sandbox.devops.devloop


def settings_from(args: argparse.Namespace) -> MarketplaceSettings:
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        throttle_rate=args.throttle_rate,
        retry_after=args.retry_after,
        drop_rate=args.drop_rate,
        created_precision=getattr(args, "created_precision", None) or "exact",
    )
    faults.validate()
    settings = MarketplaceSettings(
        seed=args.seed,
        generate=args.generate,
        seed_file=args.seed_file,
        import_files=tuple(getattr(args, "import_files", None) or ()),
        state_file=args.state_file,
        faults=faults,
        clock=MockClock(),
    )
    if args.api_key:
        settings.api_key = args.api_key
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        app = create_app(settings)
    except (SeedError, ValueError) as exc:
        print(f"mock-marketplace: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"mock-marketplace: state file {args.state_file}: {exc}", file=sys.stderr)
        return 2
    served = _served(args, app)
    if served is None:
        return 2
    url = f"{served.scheme}://{args.host}:{args.port}"
    stats = app.store.stats()
    print(f"Mock Connect marketplace on {url}")
    print(
        f"  API endpoint  {url}/public/v1   (key id {settings.key_id}; send the whole key as "
        "Authorization)"
    )
    print(f"  web page      {url}/    ledger {url}/admin/ledger    stats {url}/admin/stats")
    print(f"  requests      {stats['requests']} {stats['requests_by_status']}")
    print(
        f"  subscriptions {stats['subscriptions']}; marketplaces "
        f"{', '.join(sorted(app.store.marketplaces))}"
    )
    for product in sorted(app.store.products.values(), key=lambda p: p.id):
        print(
            f"  product       {product.id} {product.name!r}: approve template "
            f"{approve_template(product)}"
        )
    if settings.state_file:
        print(f"  state file    {settings.state_file}")
    for line in served.lines:
        print(line)
    sys.stdout.flush()
    with served.running():
        serve(served.app, host=args.host, port=args.port, **served.uvicorn)
    return 0


def _served(args: argparse.Namespace, app: Any) -> Served | None:
    """The app with the HTTPS and DevOps options applied; None (after saying why) if unusable."""
    try:
        return prepare(args, app)
    except (DevloopError, VariablesError) as exc:
        print(f"mock-marketplace: {exc}", file=sys.stderr)
        return None
