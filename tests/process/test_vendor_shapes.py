"""The vendor shapes of ``config/``, as users run them: ``cancel-processor check`` on each example
(OAuth2, mutual TLS, rate-limited) against the mocks playing that vendor, green as shipped and
naming the option when it is wrong; then two whole ``run --once`` processes:

- OAuth2 with tokens living 1.5 s, for longer than three lifetimes: every request final, every
  vendor call authorised (no 401 in the mock's ledger), tokens renewed (at least one per lifetime,
  far fewer than calls), and no token nor the client secret in the output (debug logs, JSON) or
  the journal's file.
- A vendor limited to N calls a second and an adapter configured for N: the mock's busiest second
  holds at most N calls, no 429; the throughput is printed (``-s``), not asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.local import Sandbox
from cancel_sandbox.vendor.operations import OperationSettings
from cancel_sandbox.vendor.outcomes import MOCK_VENDOR_OUTCOMES
from cancel_sandbox.vendor.pki import Pki, make_pki

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "config" / "seed.example.yaml"
CLIENT_ID, CLIENT_SECRET = "cancel-processor", "oauth-shape-secret-4f0d2a"
OPTIONS = "CANCEL_PROCESSOR_ADAPTERS__VENDOR__OPTIONS__"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def check(config: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    journal = f"sqlite:///{tmp_path / 'journal.db'}"
    return cli({"CANCEL_PROCESSOR_JOURNAL__URL": journal, **env}, "check", "-c", config)


def vendor_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stdout.splitlines() if "vendor" in line]
    return "\n".join(lines) or done.stdout + done.stderr


# -- check on each example ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mtls"))


def connect_env(box: Sandbox) -> dict[str, str]:
    return {"CONNECT_ENDPOINT": box.endpoint, "CONNECT_API_KEY": box.api_key}


def test_the_oauth_example_checks_green_and_names_the_token_url_when_wrong(
    tmp_path: Path,
) -> None:
    vendor = {
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        "token_lifetime": 60,
    }
    with Sandbox(generate=0, seed_file=SEED, vendor_options=vendor) as box:
        token_url = f"{box.vendor.url}/oauth/token"
        env = {
            **connect_env(box),
            "VENDOR_CLIENT_SECRET": CLIENT_SECRET,
            f"{OPTIONS}BASE_URL": box.vendor.url,
            f"{OPTIONS}AUTH__TOKEN_URL": token_url,
        }
        done = check("config/processor.oauth.yaml", env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "status read of SUB-PROBE-0001: active" in vendor_line(done)
        wrong = check(
            "config/processor.oauth.yaml", {**env, "VENDOR_CLIENT_SECRET": "wrong"}, tmp_path
        )
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr
        assert f"token endpoint {token_url} answered HTTP 401 (invalid_client)" in vendor_line(
            wrong
        )
        issued = box.vendor_app.issuer.issued_tokens() if box.vendor_app.issuer else []
    assert len(issued) == 1
    for output in (done.stdout + done.stderr, wrong.stdout + wrong.stderr):
        assert CLIENT_SECRET not in output and issued[0] not in output


def test_the_mtls_example_checks_green_and_names_a_missing_file(pki: Pki, tmp_path: Path) -> None:
    with Sandbox(generate=0, seed_file=SEED, vendor_server=pki.server_tls()) as box:
        env = {
            **connect_env(box),
            **box.environ(),
            "VENDOR_API_TOKEN": box.vendor_token,
            f"{OPTIONS}BASE_URL": f"https://127.0.0.1:{box.vendor.port}",
            f"{OPTIONS}VERIFY": str(pki.ca),
            f"{OPTIONS}TLS__CERT": str(pki.client_cert),
            f"{OPTIONS}TLS__KEY": str(pki.client_key),
        }
        done = check("config/processor.mtls.yaml", env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "status read of SUB-PROBE-0001: active" in vendor_line(done)
        missing = str(tmp_path / "gone.pem")
        broken = check(
            "config/processor.mtls.yaml", {**env, f"{OPTIONS}TLS__CERT": missing}, tmp_path
        )
        assert broken.returncode == 2, broken.stdout + broken.stderr
        assert f"option 'tls.cert': the file {missing} cannot be read" in broken.stdout
        stranger = {
            f"{OPTIONS}TLS__CERT": str(pki.stranger_cert),
            f"{OPTIONS}TLS__KEY": str(pki.stranger_key),
        }
        refused = check("config/processor.mtls.yaml", {**env, **stranger}, tmp_path)
        assert refused.returncode != 0 and "status read of" not in refused.stdout


def test_the_rate_example_checks_green_and_names_a_bad_rate(tmp_path: Path) -> None:
    with Sandbox(generate=0, seed_file=SEED, vendor_options={"rate_calls": 10}) as box:
        env = {
            **connect_env(box),
            "VENDOR_API_TOKEN": box.vendor_token,
            f"{OPTIONS}BASE_URL": box.vendor.url,
        }
        done = check("config/processor.rate.yaml", env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        bad = check("config/processor.rate.yaml", {**env, f"{OPTIONS}RATE__CALLS": "0"}, tmp_path)
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert "option 'rate.calls': expected a whole number of calls, at least 1" in bad.stdout


def test_the_async_example_checks_green_and_runs_against_the_asynchronous_mock(
    tmp_path: Path,
) -> None:
    """``check`` is green on the shipped example; a ``run --once`` with its terminate shape
    approves every request only after the vendor's operation completed, never twice."""
    operations = OperationSettings(on=True, delay=0.5)
    with Sandbox(generate=0, seed_file=SEED, vendor_options={"operations": operations}) as box:
        env = {
            **connect_env(box),
            "VENDOR_API_TOKEN": box.vendor_token,
            f"{OPTIONS}BASE_URL": box.vendor.url,
        }
        done = check("config/processor.async.yaml", env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        bad = check(
            "config/processor.async.yaml",
            {**env, f"{OPTIONS}TERMINATE__ASYNC__EVERY": "-1"},
            tmp_path,
        )
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert "terminate.async.every" in bad.stdout + bad.stderr
    shipped = yaml.safe_load((REPO / "config" / "processor.async.yaml").read_text())
    shape = shipped["adapters"]["vendor"]["options"]["terminate"]["async"]
    with Sandbox(generate=6, seed=3, vendor_options={"operations": operations}) as box:
        run, _, pending = run_once(
            box, tmp_path, {"terminate": {"async": {**shape, "every": 0.2}}}, 2
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        all_final(box, pending)
        summary = box.vendor_ledger()["summary"]
        assert summary["repeated_terminate_calls"] == 0, summary
        assert summary["polls"] >= len(pending), summary


# -- whole runs ---------------------------------------------------------------------------------


def run_once(
    box: Sandbox, tmp_path: Path, options: dict[str, Any], workers: int, **env: str
) -> Any:
    journal = tmp_path / "journal.db"
    data = box.config_data(f"sqlite:///{journal}", processing={"concurrency": workers})
    data["adapters"]["vendor"]["options"].update(options)
    data["log"] = {"level": "debug", "format": "json"}
    config = tmp_path / "processor.yaml"
    config.write_text(yaml.safe_dump(data))
    pending = box.pending_cancels()
    done = cli({**box.environ(), **env}, "run", "--once", "--no-check", "-c", str(config))
    return done, journal, pending


def all_final(box: Sandbox, pending: set[str]) -> None:
    """Every cancel pending before the run approved or refused, none twice, none lost."""
    outcome = box.check(initially_pending=pending)
    assert outcome.ok and outcome.pending == 0, outcome
    assert outcome.approved + outcome.failed == len(pending) > 0, outcome


LIFETIME = 1.5


@pytest.fixture
def oauth_box() -> Iterator[Sandbox]:
    vendor = {
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        "token_lifetime": LIFETIME,
        "work_ms": 250,  # 40 calls of 250 ms over 2 workers: 5 s at least, over three lifetimes
    }
    with Sandbox(generate=40, seed=11, vendor_options=vendor) as box:
        yield box


def test_an_oauth_run_longer_than_three_token_lifetimes(oauth_box: Sandbox, tmp_path: Path) -> None:
    box = oauth_box
    auth = {
        "type": "oauth2",
        "token_url": f"{box.vendor.url}/oauth/token",
        "client_id": CLIENT_ID,
        "env": "SHAPE_CLIENT_SECRET",
    }
    options = {"auth": auth, "outcomes": MOCK_VENDOR_OUTCOMES}
    done, journal, pending = run_once(box, tmp_path, options, 2, SHAPE_CLIENT_SECRET=CLIENT_SECRET)
    ledger = box.vendor_ledger()
    calls = ledger["calls"]
    span = _seconds(calls[-1]["at"]) - _seconds(calls[0]["at"])
    summary = ledger["summary"]
    issued = box.vendor_app.issuer.issued_tokens() if box.vendor_app.issuer else []
    print(
        f"\noauth: {len(calls)} calls over {span:.1f} s ({span / LIFETIME:.1f} token lifetimes), "
        f"{summary['tokens_issued']} tokens fetched, calls by status {summary['calls_by_status']}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert span > 3 * LIFETIME  # the run outlived three tokens
    assert set(summary["calls_by_status"]) <= {"200", "404", "422"}  # no 401: all authorised
    assert summary["expired_token_calls"] == 0 and summary["unknown_token_calls"] == 0
    assert span / LIFETIME <= summary["tokens_issued"] < len(calls) / 2
    all_final(box, pending)
    text = done.stdout + done.stderr
    assert text.count('"event":"state_changed"') >= 40  # the logs were there to search
    stored = journal.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("journal.db-*"))
    assert len(issued) == summary["tokens_issued"]
    for secret in (CLIENT_SECRET, *issued):
        assert secret not in text and secret.encode() not in stored


N = 8


def test_a_rate_limited_run_stays_under_the_vendors_limit(tmp_path: Path) -> None:
    with Sandbox(generate=48, seed=12, vendor_options={"rate_calls": N, "rate_per": 1}) as box:
        options = {"rate": {"calls": N, "per": 1}}
        done, _, pending = run_once(box, tmp_path, options, 8)
        ledger = box.vendor_ledger()
        all_final(box, pending)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = ledger["calls"]
    per_second = Counter(c["at"][:19] for c in calls)
    span = _seconds(calls[-1]["at"]) - _seconds(calls[0]["at"])
    # After the first window's burst of N, calls leave at the limit's pace.
    steady = (len(calls) - N) / span
    print(
        f"\nrate {N}/s: {len(calls)} calls over {span:.2f} s, {steady:.2f} calls/s after the "
        f"first window ({steady / N:.2f} of N), busiest second {max(per_second.values())}, "
        f"calls by status {ledger['summary']['calls_by_status']}"
    )
    assert max(per_second.values()) <= N, per_second
    assert ledger["summary"]["rate_limited_calls"] == 0
    assert "429" not in ledger["summary"]["calls_by_status"]
    assert len(per_second) >= len(calls) // N  # the limit did spread the calls


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
