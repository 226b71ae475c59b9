"""No configured secret ever leaves the processor: a whole run, scanned.

One daemon run as a real process (debug logs as JSON), against the sandbox marketplace and vendor
with faults on both (5xx, 429, timeouts, dropped answers), plus a second vendor that echoes the
bearer token back in every error body (refusals, definite errors, 5xx) so that the token really
does travel through exception texts, refusal reasons and the journal. While it runs: every page of
the ops server, and every operator command in every format. Then a second run in console format,
a dry run, bad configurations (a journal URL with a password among them), the journal's stored
text and both mocks' ledgers. Every byte of all that is searched for each secret.

Positive controls keep the scan honest: the echo vendor must have received the token and sent it
back, the journal must show masked (``***``) texts, requests must have been parked and refused,
and retries must have happened, or the scan would prove nothing.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cancel_sandbox.faults import FaultSettings
from cancel_sandbox.local import VENDOR_TOKEN_ENV, Sandbox
from processor.ops.serving import ServerThread, free_port

from .test_crash import processor_env

pytestmark = pytest.mark.slow

API_KEY = f"ApiKey SU-{secrets.randbelow(900) + 100}-555-777:ck{secrets.token_hex(12)}"
VENDOR_TOKEN = f"vt{secrets.token_hex(14)}"
STATUS_TOKEN = f"st{secrets.token_hex(14)}"
DB_PASSWORD = f"pw{secrets.token_hex(10)}"
# The whole key, its secret half on its own, the vendor's token, the page's token, a DB password.
SECRETS = {
    "connect api key": API_KEY,
    "connect key secret": API_KEY.rsplit(":", 1)[1],
    "vendor token": VENDOR_TOKEN,
    "status token": STATUS_TOKEN,
    "database password": DB_PASSWORD,
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class EchoVendor:
    """A vendor API that repeats the Authorization header it got in every error body."""

    def __init__(self) -> None:
        self.seen_tokens: set[str] = set()
        self.echoed = 0
        self.server = ServerThread(
            Starlette(
                routes=[
                    Route("/v1/subscriptions/{sid}/{action}", self._action, methods=["POST"]),
                ]
            )
        )

    async def _action(self, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        self.seen_tokens.add(auth.partition(" ")[2])
        self.echoed += 1
        kind = sum(map(ord, request.path_params["sid"])) % 3
        if kind == 0:  # a refusal whose customer-facing message carries the token
            return JSONResponse({"error": "refused", "message": f"{auth} may not cancel this"}, 422)
        if kind == 1:  # a definite error whose error code carries the token: poison, then parked
            return JSONResponse(
                {"error": f"denied {auth}", "message": f"token {auth} rejected"}, 418
            )
        # a 5xx: ambiguous, and this vendor offers neither keys nor status: parked for a person
        return JSONResponse({"error": f"crashed handling {auth}", "trace": [auth]}, 500)


@pytest.fixture
def echo_vendor() -> Iterator[EchoVendor]:
    vendor = EchoVendor()
    vendor.server.start()
    yield vendor
    vendor.server.stop()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class Scan:
    """Everything collected, by where it came from."""

    def __init__(self) -> None:
        self.outputs: dict[str, str] = {}

    def add(self, where: str, value: Any) -> None:
        self.outputs[where] = _ANSI.sub("", _text(value))

    def leaks(self) -> list[str]:
        return [
            f"{name} in {where}"
            for where, text in self.outputs.items()
            for name, secret in SECRETS.items()
            if secret in text
        ]


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cli_all(
    runs: dict[str, tuple[dict[str, str], tuple[str, ...]]],
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Independent commands (name -> environment, arguments) at once, four at a time: each is a
    process of its own whose time is mostly start-up, and none depends on another's effect."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        started = {name: pool.submit(_cli, env, *args) for name, (env, args) in runs.items()}
        return {name: future.result() for name, future in started.items()}


def _record(scan: Scan, name: str, done: subprocess.CompletedProcess[str]) -> None:
    scan.add(f"{name} (stdout)", done.stdout)
    scan.add(f"{name} (stderr)", done.stderr)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _faults(sandbox: Sandbox, marketplace: FaultSettings, vendor: FaultSettings) -> None:
    """Faults switched at run time, so that the test's own reads outside the run see none."""
    for url, settings in ((sandbox.marketplace.url, marketplace), (sandbox.vendor.url, vendor)):
        requests.put(f"{url}/admin/faults", json=settings.as_dict(), timeout=10).raise_for_status()


def _journal_rows(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        try:
            return {
                rid: (state, error)
                for rid, state, error in db.execute(
                    "select request_id, state, last_error from requests"
                )
            }
        except sqlite3.OperationalError:  # the daemon created the file and is creating its tables
            return {}


def test_no_secret_reaches_any_output_of_a_full_run(
    tmp_path: Path, echo_vendor: EchoVendor
) -> None:
    scan = Scan()
    port = free_port()
    db = tmp_path / "journal.db"
    sandbox = Sandbox(generate=30, seed=11, api_key=API_KEY, vendor_token=VENDOR_TOKEN)
    with sandbox:
        before = sandbox.pending_cancels()
        _faults(
            sandbox,
            FaultSettings(error_rate=0.05, throttle_rate=0.05, retry_after=0.2, seed=5),
            FaultSettings(error_rate=0.1, drop_rate=0.05, latency_jitter_ms=400, seed=5),
        )
        data = sandbox.config_data(
            f"sqlite:///{db}",
            processing={
                "poll_interval": 0.3,
                "max_attempts": 2,
                "retry_base": 0.2,
                "retry_max": 0.5,
            },
            http={"enabled": True, "host": "127.0.0.1", "port": port},
            log={"level": "debug", "format": "json"},
        )
        # Above the 400 ms latency jitter: with a read timeout under it, a busy machine turned most
        # calls into timeouts and a request could still be retrying when the wait below ran out.
        # Drops and 5xx still exercise the ambiguous paths whose messages must be masked.
        data["adapters"]["vendor"]["options"]["timeout"] = {"connect": 2, "read": 1.5}
        data["adapters"]["echo"] = {
            "type": "http",
            "options": {
                "base_url": echo_vendor.server.url,
                "idempotency": "none",
                "outcomes": {
                    "422": [{"when": {"error": "refused"}, "outcome": "refused"}, "failed"]
                },
                "auth": {"type": "bearer", "env": VENDOR_TOKEN_ENV},
            },
        }
        data["defaults"]["environments"] = {"test": "echo"}
        config = tmp_path / "processor.yaml"
        config.write_text(yaml.safe_dump(data))
        env = processor_env(sandbox, CANCEL_PROCESSOR_STATUS_TOKEN=STATUS_TOKEN)
        assert env["CONNECT_API_KEY"] == API_KEY and env[VENDOR_TOKEN_ENV] == VENDOR_TOKEN

        daemon = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {STATUS_TOKEN}"}

            def settled() -> bool:
                try:
                    rows = _journal_rows(db)
                except sqlite3.OperationalError:  # not created yet, or its tables not yet
                    return False
                open_ = {
                    rid
                    for rid, (state, _) in rows.items()
                    if state not in ("approved", "failed", "parked", "closed", "revoked")
                }
                return len(rows) >= len(before) and not open_

            try:
                _wait_for(settled, 240, "every request to be approved, refused or parked")
            except AssertionError:
                daemon.send_signal(signal.SIGTERM)
                raise AssertionError(
                    f"unsettled: {sorted(_journal_rows(db).items())} "
                    f"{daemon.communicate(timeout=60)[1][-4000:]}"
                ) from None
            probes = {
                path: requests.get(base + path, headers=auth, timeout=10)
                for path in (
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/",
                    "/?state=parked",
                    "/?q=PR-",
                    "/requests/PR-0000-0000-0000-000",
                )
            }
            assert probes["/healthz"].status_code == 200 and probes["/"].status_code == 200
            for path, response in probes.items():
                scan.add(
                    f"GET {path}", f"{response.status_code} {response.headers} {response.text}"
                )
            rows = _journal_rows(db)
            for request_id in sorted(rows):
                page = requests.get(f"{base}/requests/{request_id}", headers=auth, timeout=10)
                assert page.status_code == 200
                scan.add(f"GET /requests/{request_id}", page.text)
            refused = requests.get(
                f"{base}/?token=wrong-token-0123456789", timeout=10, allow_redirects=False
            )
            assert refused.status_code == 401
            scan.add("GET /?token=wrong", f"{refused.headers} {refused.text}")

            parked = sorted(rid for rid, (state, _) in rows.items() if state == "parked")
            approved = sorted(rid for rid, (state, _) in rows.items() if state == "approved")
            assert parked and approved
            cfg = ("--config", str(config))
            # The commands that only read, at once; then the two that change a request.
            readers = {
                "status": ("status", *cfg),
                "report table": ("report", *cfg),
                "report csv": ("report", *cfg, "--format", "csv"),
                "report json": ("report", *cfg, "--format", "json"),
                "journal export": ("journal", "export", *cfg),
                "waiting": ("waiting", *cfg, "--timers"),
                "waiting json": ("waiting", *cfg, "--timers", "--format", "json"),
                "dry run": ("run", *cfg, "--dry-run"),
            }
            ran = _cli_all({name: (env, args) for name, args in readers.items()})
            for name, args in {
                "retry": ("retry", parked[0], *cfg, "--note", "operator retry"),
                "park": ("park", approved[0], *cfg, "--reason", "look"),  # refused: final
            }.items():
                ran[name] = _cli(env, *args)
            for name, done in ran.items():
                assert done.returncode in (0, 1), (name, done.stderr[-2000:])
                _record(scan, name, done)
            # The daemon takes the retried request up again: whatever it reaches (parked again,
            # or approved if its trouble was a fault that passed), it is final once more. Waited
            # for as a condition, with the same generous bound as the first settling: a loaded
            # machine is slow.
            _wait_for(
                lambda: _journal_rows(db)[parked[0]][0] in ("approved", "failed", "parked"),
                150,
                "the retried request to be handled again",
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=60)
        scan.add("daemon stdout (json)", out)
        scan.add("daemon stderr (json)", err)
        assert daemon.returncode == 0, err[-3000:]

        _faults(sandbox, FaultSettings(), FaultSettings())  # the test's own reads must not fail

        # The same journal once more, the logs in console format: the retried request again.
        again = _cli(env, "retry", parked[-1], *cfg)
        assert again.returncode == 0, again.stderr
        console = _cli(
            {**env, "CANCEL_PROCESSOR_LOG__FORMAT": "console"},
            "run",
            *cfg,
            "--once",
            "--request-id",
            parked[-1],
            timeout=120,
        )
        assert console.returncode == 1, console.stderr[-2000:]  # parked again: unfinished
        _record(scan, "run --once (console)", console)

        # The mocks' own records: requests (refusal reasons), conversations (notes), ledgers.
        scan.add("marketplace requests", sandbox.cancel_requests())
        scan.add(
            "marketplace ledger",
            requests.get(f"{sandbox.marketplace.url}/admin/ledger", timeout=10).text,
        )
        scan.add("vendor ledger", sandbox.vendor_ledger())
        for request_id in approved[:3] + parked[:3]:
            scan.add(f"notes of {request_id}", sandbox.messages(request_id))
        cancels = sandbox.cancel_requests()

    # The journal's stored text: every table, every column.
    with sqlite3.connect(db) as conn:
        scan.add("journal (every row)", "\n".join(conn.iterdump()))

    # Bad configurations: their error messages name the key and the value, but not a secret.
    bad: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {}
    for name, overrides in {
        "journal url, bad scheme": {
            "CANCEL_PROCESSOR_JOURNAL__URL": f"mysql://cp:{DB_PASSWORD}@db/cp"
        },
        "journal url, unreachable": {
            "CANCEL_PROCESSOR_JOURNAL__URL": f"postgresql://cp:{DB_PASSWORD}@127.0.0.1:{free_port()}/cp"
        },
        "endpoint with credentials": {
            "CONNECT_ENDPOINT": f"ftp://cp:{DB_PASSWORD}@connect/public/v1"
        },
        "secret in a number": {"CANCEL_PROCESSOR_PROCESSING__CONCURRENCY": API_KEY},
        "secret as a key": {"CANCEL_PROCESSOR_CONNECT__API_KEY": API_KEY},
    }.items():
        for args in (("run", "--once", *cfg), ("status", *cfg)):
            bad[f"bad config: {name}: {args[0]}"] = ({**env, **overrides}, args)
    for name, done in _cli_all(bad).items():
        assert done.returncode in (1, 2, 3), (
            name,
            done.stdout,
            done.stderr[-2000:],
        )  # 3: unreachable
        _record(scan, name, done)

    # Positive controls: the secrets did travel where a leak could have happened.
    assert echo_vendor.seen_tokens == {VENDOR_TOKEN} and echo_vendor.echoed >= 3
    assert any("***" in (error or "") for _, error in rows.values()), (
        "no scrubbed vendor error in the journal"
    )
    assert any(c["status"] == "failed" for c in cancels.values()), "no refusal reached Connect"
    metrics = scan.outputs["GET /metrics"]
    assert 'cancel_requests_total{outcome="parked"}' in metrics or "cancel_parked " in metrics
    assert re.search(r'cancel_retries_total\{cause="(throttled|server_error)"', metrics), (
        "no Connect retry"
    )
    assert re.search(r'"level": ?"debug"', scan.outputs["daemon stderr (json)"])

    assert scan.leaks() == []
