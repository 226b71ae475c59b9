"""A local sandbox: the mock marketplace and the mock vendor on loopback, and a processor
configuration that points at them. The demo, the integration tests, the crash tests and the
benchmarks all stand on it, so what the README shows is what the tests check.

:meth:`Sandbox.check` reads both ledgers and states the invariants a cancel processor must keep:
no subscription effectively terminated twice, no approval without a termination.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.marketplace import MarketplaceSettings, approve_template, create_app
from cancel_sandbox.vendor import VendorSettings
from cancel_sandbox.vendor import create_app as create_vendor_app
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from processor.ops.serving import ServerThread

__all__ = ["Sandbox", "Check", "VENDOR_TOKEN_ENV", "adapter_options"]

VENDOR_TOKEN_ENV = "SANDBOX_VENDOR_TOKEN"
SANDBOX_VENDOR_TOKEN = "sandbox-vendor-token"


def adapter_options(base_url: str, mode: str) -> dict[str, Any]:
    """The http adapter's options for the mock vendor in ``mode`` (what that vendor offers)."""
    options: dict[str, Any] = {
        "base_url": base_url,
        "idempotency": {"key": "key", "natural": "natural"}.get(mode, "none"),
        "auth": {"type": "bearer", "env": VENDOR_TOKEN_ENV},
        "timeout": {"connect": 2, "read": 10},
        # What the mock vendor's bodies mean: the adapter's defaults name no vendor's codes.
        "outcomes": MOCK_VENDOR_OUTCOMES,
        "suspend": True,
        "purge": True,
    }
    if mode != "none":
        options["status"] = True
    return options


@dataclass
class Check:
    requests: int
    approved: int
    failed: int
    pending: int
    vendor_calls: int
    effective_terminations: int
    duplicate_terminations: int
    approvals_without_termination: int
    lost: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.duplicate_terminations == 0
            and self.approvals_without_termination == 0
            and self.lost == 0
        )

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("cancel requests", self.requests),
            ("approved", self.approved),
            ("refused (failed)", self.failed),
            ("still pending (parked or waiting)", self.pending),
            ("lost", self.lost),
            ("raw vendor calls", self.vendor_calls),
            ("effective terminations", self.effective_terminations),
            ("duplicate effective terminations", self.duplicate_terminations),
            ("approvals without a termination", self.approvals_without_termination),
        ]


class Sandbox:
    def __init__(
        self,
        *,
        generate: int = 50,
        seed: int = 7,
        vendor_mode: str = "key",
        marketplace_faults: FaultSettings | None = None,
        vendor_faults: FaultSettings | None = None,
        refuse_pattern: str = r"7$",
        gone_pattern: str = r"^SUB-GONE",
        state_dir: str | None = None,
        vendor_token: str = SANDBOX_VENDOR_TOKEN,
        vendor_read_only_token: str | None = None,
        vendor_options: Mapping[str, Any] | None = None,
        vendor_server: Mapping[str, Any] | None = None,
        vendor_client: tuple[str, str, str] | None = None,
        **marketplace_options: Any,
    ) -> None:
        self.mode = vendor_mode
        self.vendor_token = vendor_token
        self.market_app = create_app(
            MarketplaceSettings(
                generate=generate,
                seed=seed,
                faults=marketplace_faults or FaultSettings(),
                state_file=os.path.join(state_dir, "marketplace.sqlite") if state_dir else None,
                **marketplace_options,
            )
        )
        self.vendor_app = create_vendor_app(
            VendorSettings(
                token=vendor_token,
                read_only_token=vendor_read_only_token,
                mode=vendor_mode,
                refuse_pattern=refuse_pattern,
                gone_pattern=gone_pattern,
                faults=vendor_faults or FaultSettings(),
                state_file=os.path.join(state_dir, "vendor.sqlite") if state_dir else None,
                **(vendor_options or {}),  # OAuth2, a rate limit (see cancel_sandbox.vendor.gates)
            )
        )
        self.marketplace = ServerThread(self.market_app)
        # vendor_server: uvicorn's TLS settings, for an HTTPS (or mutual TLS) vendor
        self.vendor = ServerThread(self.vendor_app, **(vendor_server or {}))
        # vendor_client: (CA, certificate, key) to read a mutual-TLS vendor's ledger over HTTPS
        self.vendor_client = vendor_client
        self.api_key = self.market_app.config.api_key

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Sandbox:
        self.marketplace.start()
        self.vendor.start()
        return self

    def stop(self) -> None:
        self.marketplace.stop()
        self.vendor.stop()
        close = getattr(self.vendor_app, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the processor needs ---------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.marketplace.url}/public/v1"

    @property
    def product_templates(self) -> dict[str, str]:
        return {
            pid: approve_template(product)
            for pid, product in self.market_app.store.products.items()
        }

    def environ(self) -> dict[str, str]:
        """Secrets for a processor run (passed by environment, as in production)."""
        return {"CONNECT_API_KEY": self.api_key, VENDOR_TOKEN_ENV: self.vendor_token}

    def config_data(
        self,
        journal_url: str,
        *,
        processing: Mapping[str, Any] | None = None,
        preview_noop: bool = False,
        **sections: Any,
    ) -> dict[str, Any]:
        """A processor configuration (as YAML-ready data) for this sandbox."""
        data: dict[str, Any] = {
            "connect": {
                "endpoint": self.endpoint,
                "timeout_connect": 2,
                "timeout_read": 10,
                "retry": {"max_attempts": 10, "backoff_base": 0.05, "backoff_max": 1.0},
            },
            "journal": {"url": journal_url, "lease_seconds": 30},
            "processing": {
                "concurrency": 8,
                "poll_interval": 1,
                "retry_base": 0.2,
                "retry_max": 2.0,
                "once_max_wait": 30,
                "shutdown_timeout": 10,
                "circuit": {"failures": 20, "reset_after": 1},
                **(processing or {}),
            },
            "adapters": {
                "vendor": {"type": "http", "options": adapter_options(self.vendor.url, self.mode)},
                "noop": {"type": "noop"},
            },
            "defaults": {
                "adapter": "vendor",
                "environments": {"preview": "noop"} if preview_noop else {},
            },
            "products": {pid: {"template": tl} for pid, tl in self.product_templates.items()},
            "log": {"level": "warning"},
            "http": {"enabled": False},
            # The mock vendor refuses some subscriptions on purpose; its refusals reach Connect
            # at once here, as the flows these configurations show expect. The hold window's
            # own tests and the demo set guard.hold.
            "guard": {"hold": 0},
        }
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return data

    # -- reading the outcome --------------------------------------------------------------

    def vendor_ledger(self) -> dict[str, Any]:
        if self.vendor_client is not None:  # a mutual-TLS vendor answers its admin over HTTPS
            ca, cert, key = self.vendor_client
            url = f"https://127.0.0.1:{self.vendor.port}/admin/ledger"
            return requests.get(url, verify=ca, cert=(cert, key), timeout=10).json()  # type: ignore[no-any-return]
        return requests.get(f"{self.vendor.url}/admin/ledger", timeout=10).json()  # type: ignore[no-any-return]

    def cancel_requests(self) -> dict[str, dict[str, Any]]:
        """Every cancel request the marketplace holds, by id, as the API shows them."""
        out: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            response = requests.get(
                f"{self.endpoint}/requests?eq(type,cancel)&ordering(created,id)&limit=1000&offset={offset}",
                headers={"Authorization": self.api_key},
                timeout=30,
            )
            response.raise_for_status()
            page = response.json()
            out.update({r["id"]: r for r in page})
            if len(page) < 1000:
                return out
            offset += 1000

    def check(
        self, *, initially_pending: set[str] | None = None, noop_environments: tuple[str, ...] = ()
    ) -> Check:
        """The invariants, from the marketplace's and the vendor's own records.

        ``noop_environments``: connection types approved without a vendor call by design.
        """
        cancels = self.cancel_requests()
        ledger = self.vendor_ledger()
        effects = [e for e in ledger["effects"] if e["action"] == "terminate"]
        terminated_subs = {e["subscription_id"] for e in effects}
        duplicates = sum(1 for e in effects if e.get("duplicate"))
        watched = initially_pending if initially_pending is not None else set(cancels)
        approved = [
            cancels[rid] for rid in watched if cancels.get(rid, {}).get("status") == "approved"
        ]

        def subscription(request: dict[str, Any]) -> str | None:
            for param in request["asset"].get("params", []):
                if param.get("id") == "subscription_id" and param.get("value"):
                    return str(param["value"])
            external = request["asset"].get("external_id")
            return None if external is None else str(external)

        without = [
            r["id"]
            for r in approved
            if r["asset"]["connection"]["type"] not in noop_environments
            and subscription(r) not in terminated_subs
            and not _gone(subscription(r))
        ]
        lost = [rid for rid in watched if rid not in cancels]
        return Check(
            requests=len(watched),
            approved=sum(1 for rid in watched if cancels.get(rid, {}).get("status") == "approved"),
            failed=sum(1 for rid in watched if cancels.get(rid, {}).get("status") == "failed"),
            pending=sum(1 for rid in watched if cancels.get(rid, {}).get("status") == "pending"),
            vendor_calls=int(ledger["summary"]["calls"]),
            effective_terminations=len(effects) - duplicates,
            duplicate_terminations=duplicates,
            approvals_without_termination=len(without),
            lost=len(lost),
            details={"approved_without_termination": without[:20], "lost": lost[:20]},
        )

    def pending_cancels(self) -> set[str]:
        return {rid for rid, r in self.cancel_requests().items() if r["status"] == "pending"}

    # -- acting and looking as the other parties do -----------------------------------------

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(
            method,
            f"{self.endpoint}/{path}",
            json=body,
            headers={"Authorization": self.api_key},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def request(self, request_id: str) -> dict[str, Any]:
        """One request as the API shows it now."""
        return self._api("GET", f"requests/{request_id}")  # type: ignore[no-any-return]

    def act(
        self, request_id: str, action: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request action as another party takes it (a reseller revoking, a person failing)."""
        return self._api("POST", f"requests/{request_id}/{action}", dict(body or {}))  # type: ignore[no-any-return]

    def messages(self, request_id: str) -> list[str]:
        """The texts of the request's conversation, oldest first."""
        conversation = self._api("GET", f"conversations?instance_id={request_id}")[0]
        found = self._api("GET", f"conversations/{conversation['id']}/messages")
        return [m["text"] for m in sorted(found, key=lambda m: m["created"])]

    def vendor_effects(self, subscription_id: str | None = None) -> list[dict[str, Any]]:
        """What the vendor actually did (terminate, suspend, purge), optionally for one
        subscription."""
        effects = self.vendor_ledger()["effects"]
        return [e for e in effects if subscription_id in (None, e["subscription_id"])]


def _gone(subscription_id: str | None) -> bool:
    # The mock vendor answers 404 for these: the subscription was already gone, approval is right.
    return bool(subscription_id and subscription_id.startswith("SUB-GONE"))
