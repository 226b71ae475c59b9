"""TLS: verification is on by default for Connect and vendor calls; a private CA is trusted only
when the configuration names its bundle.

A throwaway CA and a server certificate for 127.0.0.1 are made in the test; the mock marketplace
and the mock vendor are served over HTTPS with it (uvicorn). Without the bundle every call fails
with an error that names TLS, and nothing is sent; with it the calls succeed, up to a whole
``run --once`` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cancel_sandbox.local import VENDOR_TOKEN_ENV, Sandbox, adapter_options
from cancel_sandbox.vendor.pki import Pki, make_pki
from processor.adapters.base import RetryLater, Terminated, VendorCall
from processor.adapters.http import HttpAdapter
from processor.config.schema import ConfigError, load_config
from processor.daemon.runtime import gateway_settings
from processor.marketplace import ConnectGateway, Selector, TransientError
from processor.ops.serving import ServerThread

from ..http_adapter_support import REQUEST as ADAPTER_REQUEST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 (the shared test PKI)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


class HttpsSandbox:
    """The sandbox's two mock apps, served over HTTPS with the throwaway certificate."""

    def __init__(self, pki: Pki, generate: int) -> None:
        self.sandbox = Sandbox(generate=generate, seed=5)  # its apps only: it is never started
        # A client refused over TLS leaves its connection to the server's graceful shutdown, which
        # would wait for it as long as the thread's join allows (10 s): one second is plenty here.
        tls = {
            "ssl_certfile": str(pki.server_cert),
            "ssl_keyfile": str(pki.server_key),
            "timeout_graceful_shutdown": 1,
        }
        self.marketplace = ServerThread(self.sandbox.market_app, **tls)
        self.vendor = ServerThread(self.sandbox.vendor_app, **tls)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.marketplace.port}/public/v1"

    @property
    def vendor_url(self) -> str:
        return f"https://127.0.0.1:{self.vendor.port}"

    def config(
        self, journal: Path, *, connect_verify: Any = True, vendor_verify: Any = True
    ) -> dict[str, Any]:
        data = self.sandbox.config_data(f"sqlite:///{journal}", processing={"once_max_wait": 2})
        data["connect"].update(
            endpoint=self.endpoint,
            verify=connect_verify,
            retry={"max_attempts": 2, "backoff_base": 0.05, "backoff_max": 0.1},
        )
        options = adapter_options(self.vendor_url, self.sandbox.mode)
        if vendor_verify is not True:
            options["verify"] = vendor_verify
        data["adapters"]["vendor"]["options"] = options
        return data

    def pending(self) -> int:
        return sum(
            1
            for r in self.sandbox.market_app.store.requests.values()
            if r.type == "cancel" and r.status == "pending"
        )


@pytest.fixture
def https(pki: Pki) -> Iterator[HttpsSandbox]:
    servers = HttpsSandbox(pki, generate=6)
    servers.marketplace.start()
    servers.vendor.start()
    yield servers
    servers.marketplace.stop()
    servers.vendor.stop()


def _env(servers: HttpsSandbox) -> dict[str, str]:
    # Nothing from the environment may decide what is trusted: only the configuration does.
    drop = ("CANCEL_PROCESSOR_", "CONNECT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **servers.sandbox.environ()}


def _marketplace(servers: HttpsSandbox, tmp_path: Path, **verify: Any) -> ConnectGateway:
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(servers.config(tmp_path / "j.db", **verify)))
    return ConnectGateway(gateway_settings(load_config(path, environ={}), servers.sandbox.api_key))


# The http adapter tests' request, on a subscription of this file's own.
REQUEST = replace(
    ADAPTER_REQUEST, subscription_id="SUB-TLS-1", params={"subscription_id": "SUB-TLS-1"}
)
CALL = VendorCall(
    request=REQUEST, subscription_id="SUB-TLS-1", idempotency_key="PR-1234-5678-9012-001:terminate"
)


def _ledger(servers: HttpsSandbox, pki: Pki) -> dict[str, Any]:
    """The vendor's own record of calls, read over HTTPS trusting the test CA."""
    return requests.get(f"{servers.vendor_url}/admin/ledger", verify=str(pki.ca), timeout=10).json()  # type: ignore[no-any-return]


def test_connect_calls_verify_tls_by_default_and_trust_a_configured_ca_bundle(
    https: HttpsSandbox, pki: Pki, tmp_path: Path
) -> None:
    untrusted = _marketplace(https, tmp_path)
    with pytest.raises(TransientError) as refused:
        untrusted.count_pending(Selector())
    message = str(refused.value)
    assert "TLS verification failed (unable to get local issuer certificate)" in message
    assert "connect.verify" in message and refused.value.cause == "tls"

    trusted = _marketplace(https, tmp_path, connect_verify=str(pki.ca))
    assert trusted.count_pending(Selector()) == https.pending() > 0


def test_vendor_calls_verify_tls_by_default_and_trust_a_configured_ca_bundle(
    https: HttpsSandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENDOR_TOKEN_ENV, https.sandbox.vendor_token)
    untrusted = HttpAdapter(adapter_options(https.vendor_url, "key"))
    outcome = untrusted.terminate(CALL)
    # Certificate rejected: provably nothing sent, so "later", never "may have acted".
    assert isinstance(outcome, RetryLater) and "TLS verification failed" in outcome.detail, outcome
    assert _ledger(https, pki)["summary"]["calls"] == 0

    trusted = HttpAdapter({**adapter_options(https.vendor_url, "key"), "verify": str(pki.ca)})
    assert isinstance(trusted.terminate(CALL), Terminated)
    assert _ledger(https, pki)["summary"]["calls"] == 1
    untrusted.close()
    trusted.close()


def test_a_ca_bundle_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(None, {"CANCEL_PROCESSOR_CONNECT__VERIFY": str(tmp_path / "missing.pem")})
    assert "connect.verify" in str(bad.value) and "CA bundle" in str(bad.value)


def test_a_whole_run_over_https_needs_the_ca_bundle(
    https: HttpsSandbox, pki: Pki, tmp_path: Path
) -> None:
    pending = https.pending()
    untrusted = tmp_path / "untrusted.yaml"
    untrusted.write_text(yaml.safe_dump(https.config(tmp_path / "u.db")))
    failed = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--once", "--config", str(untrusted)],
        env=_env(https),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The backfill's Connect check fails at once, naming TLS and what to set: Connect out of reach
    # (3), never a success, and nothing was done.
    assert "TLS verification failed" in failed.stderr, failed.stderr[-2000:]
    assert "connect.verify" in failed.stderr, failed.stderr[-2000:]
    assert failed.returncode == 3, (failed.returncode, failed.stdout[-2000:])
    assert (
        https.pending() == pending and _ledger(https, pki)["summary"]["calls"] == 0
    )  # nothing was done

    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(
        yaml.safe_dump(
            https.config(tmp_path / "t.db", connect_verify=str(pki.ca), vendor_verify=str(pki.ca))
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--once", "--config", str(trusted)],
        env=_env(https),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert https.pending() == 0
    assert _ledger(https, pki)["summary"]["calls"] >= pending  # the vendor was reached over TLS
