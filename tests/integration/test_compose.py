"""compose.yaml, checked as far as this machine allows (no Docker engine runs here).

Each service's command is parsed by the CLI's own argparse parser (a typo in a subcommand or an
option fails here, not at ``docker compose up``); the processor's mounted configuration validates
with :func:`processor.config.schema.load_config` in the environment compose and the Dockerfile give
it; the services find each other (host names, ports, the shared secrets); the ops server accepts its
0.0.0.0 bind because a long enough token is set; the journal lives on a named volume at the path
the image's journal URL names; every service has a health check on its own ``/healthz``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cancel_sandbox.marketplace import MarketplaceSettings, create_app
from processor.cli.main import build_parser
from processor.config.schema import load_config
from processor.daemon.runtime import load_adapters
from processor.journal import open_journal
from processor.observe import Metrics
from processor.ops.readiness import make_readiness
from processor.ops.server import build_ops_server

from ..conftest import REPO

COMPOSE = REPO / "compose.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set in the environment: the default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]  # type: ignore[no-any-return]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in (service.get("environment") or {}).items()}


def _image_environment() -> dict[str, str]:
    """The ENV lines of the Dockerfile's final stage."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_three_services_from_the_one_image(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"marketplace", "vendor", "processor"}
    assert {(s["build"], s["image"]) for s in services.values()} == {
        (".", "cancel-processor:local")
    }


@pytest.mark.parametrize("name", ["marketplace", "vendor", "processor"])
def test_each_command_is_a_real_subcommand_with_valid_options(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    argv = [str(a) for a in services[name]["command"]]
    args = build_parser(argv).parse_args(argv)  # SystemExit (and a usage message) when invalid
    assert callable(args.func) and args.command == argv[0]


@pytest.mark.parametrize("name", ["marketplace", "vendor", "processor"])
def test_each_service_has_a_health_check_on_its_own_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    port = "9464" if name == "processor" else _option(service["command"], "--port")
    check = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in check


def test_the_processor_config_validates_and_points_at_the_other_services(
    services: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = services["processor"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in processor["volumes"])}
    config_path = REPO / mounts["/etc/cancel-processor/processor.yaml"]
    env = {**_image_environment(), **_environment(processor)}
    assert env["CANCEL_PROCESSOR_CONFIG"] == "/etc/cancel-processor/processor.yaml"
    config = load_config(config_path, environ=env)

    # The journal: SQLite on the named volume mounted where the image's journal URL points.
    journal_dir = Path(config.journal.url.removeprefix("sqlite:///")).parent
    assert (
        mounts[str(journal_dir)] == "journal"
        and "journal" in yaml.safe_load(COMPOSE.read_text())["volumes"]
    )

    # Connect is the marketplace service, with the key that service requires.
    endpoint = urlsplit(config.connect.endpoint)
    assert (endpoint.hostname, str(endpoint.port)) == (
        "marketplace",
        _option(services["marketplace"]["command"], "--port"),
    )
    assert env["CONNECT_API_KEY"] == _environment(services["marketplace"])["MOCK_CONNECT_API_KEY"]
    # Exactly the products the mock marketplace's default catalog holds.
    catalog = create_app(MarketplaceSettings(generate=0)).store.products
    assert set(config.products) == set(catalog)

    # The vendor is the vendor service, with its token, and the adapter's options are valid.
    options = config.adapters["vendor"].options
    vendor = urlsplit(options["base_url"])
    assert (vendor.hostname, str(vendor.port)) == (
        "vendor",
        _option(services["vendor"]["command"], "--port"),
    )
    assert env[options["auth"]["env"]] == _environment(services["vendor"])["MOCK_VENDOR_TOKEN"]
    for key, value in env.items():  # adapters read their secrets from the environment
        monkeypatch.setenv(key, value)
    adapters = load_adapters(config)
    assert set(adapters) == {"vendor"}
    adapters["vendor"].close()  # type: ignore[attr-defined]

    # Bound to 0.0.0.0 inside the container: accepted only because the token is set and long enough.
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    journal.migrate()
    try:
        server = build_ops_server(
            config,
            journal=journal,
            metrics=Metrics(),
            readiness=make_readiness(journal=journal),
            environ=env,
        )
        assert server is not None and config.http.host == "0.0.0.0"
        assert any(p.startswith("127.0.0.1:") and p.endswith(":9464") for p in processor["ports"])
    finally:
        journal.close()
