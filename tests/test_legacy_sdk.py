"""The legacy connect-sdk 22.0 against the mock marketplace: the baseline must run unchanged.

connect-sdk pins requests 2.21 and six 1.12, which conflict with this project's environment, so it
lives in its own virtualenv, built once and cached in ``$XDG_CACHE_HOME`` (or ``~/.cache``) under
``cancel-processor/legacy-sdk-venv``; a missing or broken one is rebuilt (about ten seconds with a
package index at hand, at most a few minutes). Without an index to install from the test skips on
a developer's machine and fails in CI. The script it runs, ``bench/legacy_sdk_processor.py``, is
the benchmarks' legacy baseline; nothing in the SDK is patched or worked around.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from processor.mock.marketplace import MarketplaceSettings, approve_template, create_app
from processor.mock.serve import ServerThread
from tests.conftest import REPO, need_or_skip

SDK_REQUIREMENT = "connect-sdk==22.0"
EXPECTED_PINS = {"connect-sdk": "22.0", "requests": "2.21.0", "six": "1.12.0"}
SCRIPT = REPO / "bench" / "legacy_sdk_processor.py"
# The SDK reads one page of at most 1000 requests and never pages: stay well below it.
PENDING_CANCELS = 40

pytestmark = pytest.mark.slow


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cancel-processor" / "legacy-sdk-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _healthy(venv: Path) -> bool:
    python = _venv_python(venv)
    if not python.exists():
        return False
    probe = (
        "import json, importlib.metadata as m, connect.resources;"
        f"print(json.dumps({{n: m.version(n) for n in {sorted(EXPECTED_PINS)!r}}}))"
    )
    try:
        found = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
        return bool(json.loads(found.stdout) == EXPECTED_PINS)
    except (subprocess.SubprocessError, OSError, ValueError):
        return False


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        ([sys.executable, "-m", "venv", str(venv)], 120),
        (
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                SDK_REQUIREMENT,
            ],
            240,
        ),
    ]
    for command, timeout in steps:
        try:
            subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(venv, ignore_errors=True)
            need_or_skip(f"cannot build the legacy SDK virtualenv: {exc.stderr.strip()[-800:]}")
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            need_or_skip(f"building the legacy SDK virtualenv took over {timeout} s")


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The interpreter of a virtualenv holding connect-sdk 22.0 and its old pins."""
    venv = _cache_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two test sessions at once must not build into the same directory.
    with open(venv.parent / "legacy-sdk-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _healthy(venv):
            _build(venv)
            if not _healthy(venv):
                need_or_skip(f"the legacy SDK virtualenv at {venv} is unusable after a rebuild")
    return _venv_python(venv)


@pytest.fixture
def marketplace() -> Iterator[tuple[Any, ServerThread]]:
    app = create_app(MarketplaceSettings(generate=PENDING_CANCELS, seed=11))
    with ServerThread(app) as server:
        yield app, server


def _pending(app: Any) -> tuple[set[str], set[str]]:
    with app.store.lock:
        pending = [r for r in app.store.requests.values() if r.status == "pending"]
    return {r.id for r in pending if r.type == "cancel"}, {
        r.id for r in pending if r.type != "cancel"
    }


def _ledger(server: ServerThread) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    since = 0
    for _ in range(100):  # bounded: 100 pages of 1000 is far more than this test makes
        page = requests.get(
            f"{server.url}/admin/ledger", params={"since": since}, timeout=10
        ).json()
        entries += page["entries"]
        if not page["entries"] or entries[-1]["seq"] >= page["last_seq"]:
            return entries
        since = entries[-1]["seq"]
    raise AssertionError("the ledger did not end")


def _run_legacy(
    python: Path, server: ServerThread, api_key: str, templates: dict[str, str]
) -> dict[str, Any]:
    args = [str(python), str(SCRIPT), "--endpoint", f"{server.url}/public/v1"]
    for product, template in sorted(templates.items()):
        args += ["--product", product, "--template-id", f"{product}={template}"]
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["CONNECT_API_KEY"] = api_key  # not on the command line
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert api_key not in done.stdout + done.stderr
    assert done.returncode == 0, (
        f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-3000:]}"
    )
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def test_legacy_sdk_approves_every_pending_cancel_through_the_mock_marketplace(
    legacy_python: Path, marketplace: tuple[Any, ServerThread]
) -> None:
    app, server = marketplace
    cancels, others = _pending(app)
    assert len(cancels) == PENDING_CANCELS and others  # purchases too: the SDK must skip them
    templates = {pid: approve_template(product) for pid, product in app.store.products.items()}

    summary = _run_legacy(legacy_python, server, app.config.api_key, templates)

    assert summary["sdk"] == "connect-sdk 22.0"
    assert summary["listed"] == len(cancels) + len(others)
    assert (summary["cancels"], summary["approved"]) == (len(cancels), len(cancels))
    assert (summary["approve_failed"], summary["skipped"]) == (0, len(others))
    assert summary["elapsed_seconds"] > 0

    ledger = _ledger(server)
    approvals = [e for e in ledger if e["kind"] == "request" and e["to"] == "approved"]
    assert sorted(e["id"] for e in approvals) == sorted(cancels)  # each once, nothing else
    assert {e["actor"] for e in approvals} == {app.config.key_id}
    with app.store.lock:
        for entry in approvals:
            request = app.store.requests[entry["id"]]
            assert entry["from"] == "pending"
            assert entry["detail"] == templates[request.asset.product.id]
        assert {app.store.requests[rid].status for rid in others} == {"pending"}
    # The SDK looks up each request's conversation and notes the outcome there: the approvals,
    # and also every skip (so a skipped request gets the same note again on every pass).
    noted = Counter(e["id"] for e in ledger if e["kind"] == "message")
    assert noted == Counter(cancels | others)
