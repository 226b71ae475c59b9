"""The mock marketplace's HTTPS and DevOps options: what ``cancel-processor mock-marketplace
--tls-dir DIR --devops`` serves and prints, so a vendor runs the extension with ``cextrun`` as
Connect would run it, before deploying it.

- ``--tls-cert/--tls-key``: serve HTTPS with a certificate of your own; ``--tls-dir DIR``: with a
  throwaway local CA kept in DIR (made on first use, reused while valid; see :mod:`.pki`).
- ``--devops``: add the DevOps hub (:mod:`.hub`) and, with ``--tls-dir``, the loopback answer to
  the runner's release lookup (:mod:`.index`). Needs HTTPS: the runner always calls
  ``https://API_ADDRESS``. The environment ``cextrun`` needs is written to ``DIR/cextrun.env``
  (0600: it holds the API key) and printed without the key.
- ``--devops-variables FILE``: the extension's variables (config/devops.variables.example.yaml).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cancel_sandbox.devops.gateway import DevopsGateway
from cancel_sandbox.devops.hub import DevopsHub, DevopsSettings
from cancel_sandbox.devops.index import IndexAnswer
from cancel_sandbox.devops.pki import local_pki
from cancel_sandbox.devops.variables import load_variables
from cancel_sandbox.marketplace import approve_template

__all__ = ["DevloopError", "Served", "add_options", "prepare", "RUNNER_RELEASE"]

RUNNER_RELEASE = "43.1"  # what the release lookup answers: the runner this project is tested with
ENV_FILE = "cextrun.env"


class DevloopError(ValueError):
    """The TLS or DevOps options cannot be used together or as given."""


@dataclass
class Served:
    """What to serve and how: the ASGI app, uvicorn's TLS settings, the lines to print."""

    app: Any
    scheme: str = "http"
    uvicorn: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    index: IndexAnswer | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The release-lookup answer, if any, for as long as the server runs."""
        if self.index is None:
            yield
            return
        with self.index:
            yield


def add_options(parser: argparse.ArgumentParser) -> None:
    """The HTTPS and DevOps options of ``mock-marketplace`` (see the module docstring)."""
    tls = parser.add_argument_group("HTTPS and the DevOps surface (connect-extension-runner)")
    tls.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    tls.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    tls.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="serve HTTPS with a throwaway local CA kept in DIR (made if missing; its ca.pem is "
        "what clients trust)",
    )
    tls.add_argument(
        "--devops",
        action="store_true",
        help="also serve Connect's DevOps websocket and routes, and print the cextrun environment",
    )
    tls.add_argument(
        "--devops-variables",
        metavar="PATH",
        help="the extension's variables the runner receives (config/devops.variables.example.yaml)",
    )
    tls.add_argument(
        "--devops-environment",
        default="ENV-0000-0000-01",
        metavar="ENV_ID",
        help="the DevOps environment id the runner connects as (default %(default)s)",
    )
    tls.add_argument(
        "--devops-schedule-every",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="how often the Run due timers schedule runs (default %(default)s)",
    )


def _tls(args: argparse.Namespace) -> tuple[dict[str, Any], Path | None, Path | None]:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise DevloopError("--tls-cert and --tls-key go together")
    if args.tls_dir and args.tls_cert:
        raise DevloopError("--tls-dir makes its own certificate: not with --tls-cert/--tls-key")
    if args.tls_cert:
        for path in (args.tls_cert, args.tls_key):
            if not Path(path).is_file():
                raise DevloopError(f"{path}: no such file")
        return {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}, None, None
    if not args.tls_dir:
        return {}, None, None
    hosts = tuple(dict.fromkeys((args.host, "127.0.0.1", "localhost")))
    try:
        pki = local_pki(args.tls_dir, hosts)
    except OSError as exc:
        raise DevloopError(f"--tls-dir {args.tls_dir}: {exc.strerror or exc}") from None
    settings = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
    return settings, Path(args.tls_dir), pki.ca


def prepare(args: argparse.Namespace, marketplace: Any) -> Served:
    """The app and TLS settings ``args`` ask for around ``marketplace`` (a MarketplaceApp)."""
    uvicorn, folder, ca = _tls(args)
    served = Served(marketplace, "https" if uvicorn else "http", uvicorn)
    if ca is not None:
        served.lines.append(f"  local CA      {ca}   (what SSL_CERT_FILE/REQUESTS_CA_BUNDLE name)")
    if not args.devops:
        if args.devops_variables:
            raise DevloopError("--devops-variables needs --devops")
        return served
    if not uvicorn:
        raise DevloopError(
            "--devops needs HTTPS (the runner always calls https://API_ADDRESS): add --tls-dir DIR"
        )
    templates = {p.id: approve_template(p) for p in marketplace.store.products.values()}
    variables = load_variables(args.devops_variables, templates) if args.devops_variables else []
    settings = DevopsSettings(
        api_key=marketplace.config.api_key,
        environment_id=args.devops_environment,
        variables=variables,
        schedules={"EFS-0000-0001": ("run_due_timers", args.devops_schedule_every)},
    )
    if not (settings.environment_id.startswith("ENV-") and len(settings.environment_id) > 7):
        raise DevloopError("--devops-environment: expected an id like ENV-0000-0000-01")
    served.app = DevopsGateway(marketplace, DevopsHub(marketplace.store, settings))
    # Listening on every address: the runner on this machine connects through loopback.
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    address = f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"
    env = {
        "API_KEY": settings.api_key,
        "ENVIRONMENT_ID": settings.environment_id,
        "INSTANCE_ID": "local-1",
        "SERVER_ADDRESS": address,
        "API_ADDRESS": address,
    }
    if ca is not None:
        env.update(SSL_CERT_FILE=str(ca.resolve()), REQUESTS_CA_BUNDLE=str(ca.resolve()))
        pki = local_pki(args.tls_dir, (args.host,))
        served.index = IndexAnswer(pki.index_cert, pki.index_key, RUNNER_RELEASE)
        # Lower case only: the runner's websocket reads HTTPS_PROXY, its requests call both.
        env.update(https_proxy=served.index.proxy_url, no_proxy="127.0.0.1,localhost")
    served.lines += _devops_lines(env, folder, settings, variables)
    return served


def _devops_lines(
    env: dict[str, str], folder: Path | None, settings: DevopsSettings, variables: list[Any]
) -> list[str]:
    key_id = settings.api_key.split(":", 1)[0].removeprefix("ApiKey ")
    lines = [
        f"  DevOps        wss://{env['SERVER_ADDRESS']}/public/v1/devops/ws/"
        f"{settings.environment_id}/<instance>   tasks and results: /admin/devops",
        f"  variables     {', '.join(v.name for v in variables) or '(none: declared ones only)'}",
        f"  cextrun environment (API_KEY is the mock's key, {key_id}; its secret is not printed):",
    ]
    shown = {k: v for k, v in env.items() if k != "API_KEY"}
    lines += [f"    {k}={shlex.quote(v)}" for k, v in shown.items()]
    if folder is not None:
        path = folder / ENV_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
        os.chmod(path, 0o600)
        lines += [
            f"  all of it, API_KEY included, in {path} (0600); from extension/:",
            f"    set -a && . {path.resolve()} && set +a && cextrun",
        ]
    else:
        lines.append(
            "    API_KEY=<the key>; the release lookup is not answered: run cextrun -n "
            "(or use --tls-dir)"
        )
    return lines
