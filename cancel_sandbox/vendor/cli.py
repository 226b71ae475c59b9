"""``cancel-processor mock-vendor``: serve the mock vendor API in the foreground.

Every option can also come from a ``MOCK_VENDOR_*`` environment variable (named in ``--help``);
the token preferably so, since command lines are visible to other users of the machine. Exit
status 2 for unusable settings (a bad regex, a rate outside 0..1).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.vendor.late import ANSWERS, LateSettings
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.settings import DEFAULT_TOKEN, VendorSettings
from cancel_sandbox.vendor.state import Mode

__all__ = ["configure_parser", "run", "settings_from_args"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MOCK_VENDOR_{name}", default)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default=_env("HOST", "127.0.0.1"), help="listen address (env MOCK_VENDOR_HOST)")
    add("--port", type=int, default=_env("PORT", "8282"), help="listen port (env MOCK_VENDOR_PORT)")
    add(
        "--mode",
        choices=[m.value for m in Mode],
        default=_env("MODE", Mode.KEY.value),
        help="what a repeated call does: key = Idempotency-Key replay, natural = 409 "
        "already_terminated, read = acts again (status endpoint available), none = acts again, "
        "no status endpoint (env MOCK_VENDOR_MODE; default %(default)s)",
    )
    add(
        "--token",
        default=None,
        help="bearer token clients must send (env MOCK_VENDOR_TOKEN, preferred; default "
        f"{DEFAULT_TOKEN!r})",
    )
    add(
        "--refuse-pattern",
        default=_env("REFUSE_PATTERN", r"7$"),
        help="regex: matching subscription ids refuse termination (env MOCK_VENDOR_REFUSE_PATTERN; "
        "default %(default)s; empty: none)",
    )
    add(
        "--gone-pattern",
        default=_env("GONE_PATTERN", r"^SUB-GONE"),
        help="regex: matching subscription ids do not exist (env MOCK_VENDOR_GONE_PATTERN; "
        "default %(default)s; empty: none)",
    )
    add(
        "--work-ms",
        type=float,
        default=_env("WORK_MS", "0"),
        help="time each action takes inside the vendor (env MOCK_VENDOR_WORK_MS)",
    )
    add(
        "--latency-ms",
        type=float,
        default=_env("LATENCY_MS", "0"),
        help="injected latency before each API call (env MOCK_VENDOR_LATENCY_MS)",
    )
    add(
        "--error-rate",
        type=float,
        default=_env("ERROR_RATE", "0"),
        help="share of API calls answered 503 without acting (env MOCK_VENDOR_ERROR_RATE)",
    )
    add(
        "--throttle-rate",
        type=float,
        default=_env("THROTTLE_RATE", "0"),
        help="share of API calls answered 429 without acting (env MOCK_VENDOR_THROTTLE_RATE)",
    )
    add(
        "--drop-rate",
        type=float,
        default=_env("DROP_RATE", "0"),
        help="share of API calls applied, then the connection dropped (env MOCK_VENDOR_DROP_RATE)",
    )
    add(
        "--fault-seed",
        type=int,
        default=_env("FAULT_SEED"),
        help="random seed for the faults, for repeatable runs (env MOCK_VENDOR_FAULT_SEED)",
    )
    add(
        "--state-file",
        default=_env("STATE_FILE"),
        help="SQLite file keeping subscriptions, keys and ledger across restarts "
        "(env MOCK_VENDOR_STATE_FILE; default: memory only)",
    )

    add(
        "--oauth-client-id",
        default=_env("OAUTH_CLIENT_ID"),
        help="turn on OAuth2 client credentials: POST /oauth/token issues tokens to this client, "
        "and the API takes only those (env MOCK_VENDOR_OAUTH_CLIENT_ID); the secret from env "
        "MOCK_VENDOR_OAUTH_CLIENT_SECRET only",
    )
    add(
        "--token-lifetime",
        type=float,
        default=_env("TOKEN_LIFETIME", "300"),
        help="seconds an issued token lives (env MOCK_VENDOR_TOKEN_LIFETIME; default %(default)s)",
    )
    add(
        "--rate-calls",
        type=int,
        default=_env("RATE_CALLS"),
        help="answer 429 with Retry-After past this many API calls per window "
        "(env MOCK_VENDOR_RATE_CALLS; default: no limit)",
    )
    add(
        "--rate-per",
        type=float,
        default=_env("RATE_PER", "1"),
        help="the rate limit's window in seconds (env MOCK_VENDOR_RATE_PER; default %(default)s)",
    )
    add(
        "--apply-delay",
        type=float,
        default=_env("APPLY_DELAY", "0"),
        help="apply terminate/suspend/purge this many seconds after receiving them, whatever the "
        "client does: a vendor behind a gateway (env MOCK_VENDOR_APPLY_DELAY; default 0, at once)",
    )
    add(
        "--apply-jitter",
        type=float,
        default=_env("APPLY_JITTER", "0"),
        help="up to this many more seconds per call (env MOCK_VENDOR_APPLY_JITTER)",
    )
    add(
        "--late-answer",
        choices=ANSWERS,
        default=_env("LATE_ANSWER", "504"),
        help="what a late-applied call answers at once: 504 (the gateway gave up) or hang (no "
        "answer until applied) (env MOCK_VENDOR_LATE_ANSWER; default %(default)s)",
    )
    add(
        "--async-operations",
        action="store_true",
        default=_env("ASYNC_OPERATIONS", "") not in ("", "0", "false"),
        help="answer terminate/suspend/purge 202 with an operation to poll at GET /operations/<id>"
        ", completed --operation-delay seconds later (env MOCK_VENDOR_ASYNC_OPERATIONS)",
    )
    add(
        "--operation-delay",
        type=float,
        default=_env("OPERATION_DELAY", "1"),
        help="seconds from acceptance to completion (env MOCK_VENDOR_OPERATION_DELAY; default "
        "%(default)s)",
    )
    add(
        "--operation-jitter",
        type=float,
        default=_env("OPERATION_JITTER", "0"),
        help="up to this many more seconds per operation (env MOCK_VENDOR_OPERATION_JITTER)",
    )
    add(
        "--operation-fail-rate",
        type=float,
        default=_env("OPERATION_FAIL_RATE", "0"),
        help="share of operations that fail instead of completing (env "
        "MOCK_VENDOR_OPERATION_FAIL_RATE)",
    )
    add(
        "--operation-fail-pattern",
        default=_env("OPERATION_FAIL_PATTERN", ""),
        help="regex: operations on matching subscription ids fail (env "
        "MOCK_VENDOR_OPERATION_FAIL_PATTERN; default: none)",
    )
    add("--tls-cert", default=_env("TLS_CERT"), help="serve HTTPS with this certificate (PEM)")
    add("--tls-key", default=_env("TLS_KEY"), help="the certificate's private key (PEM)")
    add(
        "--client-ca",
        default=_env("CLIENT_CA"),
        help="with --tls-cert: require a client certificate signed by this CA bundle (mTLS; env "
        "MOCK_VENDOR_CLIENT_CA)",
    )


def tls_options(args: argparse.Namespace) -> dict[str, object]:
    """uvicorn's TLS settings from the options; empty for plain HTTP."""
    if args.tls_cert is None:
        if args.tls_key or args.client_ca:
            raise ValueError("--tls-key and --client-ca need --tls-cert")
        return {}
    options: dict[str, object] = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    if args.client_ca:
        options.update(ssl_ca_certs=args.client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def settings_from_args(args: argparse.Namespace) -> VendorSettings:
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        throttle_rate=args.throttle_rate,
        drop_rate=args.drop_rate,
        seed=args.fault_seed,
    )
    return VendorSettings(
        token=args.token or _env("TOKEN") or DEFAULT_TOKEN,
        mode=args.mode,
        refuse_pattern=args.refuse_pattern,
        gone_pattern=args.gone_pattern,
        faults=faults,
        state_file=args.state_file,
        work_ms=args.work_ms,
        oauth_client_id=args.oauth_client_id,
        oauth_client_secret=_env("OAUTH_CLIENT_SECRET"),
        token_lifetime=args.token_lifetime,
        rate_calls=args.rate_calls,
        rate_per=args.rate_per,
        late=LateSettings(args.apply_delay, args.apply_jitter, args.late_answer),
        operations=OperationSettings(
            on=bool(args.async_operations),
            delay=args.operation_delay,
            jitter=args.operation_jitter,
            fail_rate=args.operation_fail_rate,
            fail_pattern=args.operation_fail_pattern,
            seed=args.fault_seed,
        ),
    )


def run(args: argparse.Namespace) -> int:
    from cancel_sandbox.vendor.app import create_app
    from processor.ops.serving import serve

    try:
        settings = settings_from_args(args)
        tls = tls_options(args)
        app = create_app(settings)
    except ValueError as exc:
        print(f"mock-vendor: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if tls else "http"
    print(
        f"mock vendor on {scheme}://{args.host}:{args.port} (mode {app.mode.value}, "
        f"state {settings.state_file or 'in memory'}); admin at /admin/ledger",
        file=sys.stderr,
    )
    try:
        serve(app, host=args.host, port=args.port, **tls)
    finally:
        app.close()
    return 0
