"""``cancel-processor check`` (and the preflight of ``run``) against the real mocks, as a
subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cancel_sandbox.local import Sandbox
from processor.ops.serving import free_port


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(generate=5, seed=9) as box:
        yield box


def write(sandbox: Sandbox, tmp_path: Path, **changes: Any) -> Path:
    data = sandbox.config_data(f"sqlite:///{tmp_path / 'journal.db'}", preview_noop=True)
    options = data["adapters"]["vendor"]["options"]
    options["probe"] = {"subscription_id": "SUB-PROBE-0001", "expect": ["active"]}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if section == "vendor":
            if value is None:
                options.pop(name, None)
            else:
                options[name] = value
        else:
            data[section] = value
    path = tmp_path / "processor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sandbox.environ()}
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_demo_configuration_is_green(sandbox: Sandbox, tmp_path: Path) -> None:
    done = cli(sandbox, "check", "-c", str(write(sandbox, tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("OK ") for line in lines), done.stdout
    names = [line.split()[1] for line in lines]
    assert names[:4] == ["config", "adapters", "capabilities", "connect"]
    assert sum(name == "product" for name in names) == len(sandbox.product_templates)
    assert any("status read of SUB-PROBE-0001: active" in line for line in lines)


def test_a_policy_that_needs_suspend_on_an_adapter_without_it_is_exit_2_and_run_refuses(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = write(
        sandbox,
        tmp_path,
        vendor__suspend=None,
        policies={"monthly": {"grace_days": 14}},
        defaults={"adapter": "vendor", "policy": "monthly", "environments": {"preview": "noop"}},
    )
    done = cli(sandbox, "check", "-c", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CONFIG      policy monthly" in done.stdout
    assert "grace_days: 14 needs suspend, but adapter 'vendor' has no suspend" in done.stdout
    pending = sandbox.pending_cancels()
    run = cli(sandbox, "run", "--once", "-c", str(config))
    assert (
        run.returncode == 2 and "grace_days: 14 needs suspend, but adapter 'vendor'" in run.stderr
    )
    assert (
        sandbox.pending_cancels() == pending and not (tmp_path / "journal.db").exists()
    )  # nothing touched
    # A dry run still shows the plan, but says first that run would refuse to start.
    plan = cli(sandbox, "run", "--dry-run", "-c", str(config))
    assert "warning: run would refuse to start" in plan.stderr and "needs suspend" in plan.stderr, (
        plan.stderr
    )
    assert "Dry run" in plan.stdout and sandbox.pending_cancels() == pending


def test_an_unreachable_vendor_is_exit_3_and_json_says_which(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = write(sandbox, tmp_path, vendor__base_url=f"http://127.0.0.1:{free_port()}")
    done = cli(sandbox, "check", "-c", str(config), "--format", "json")
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == 3
    failing = [c for c in report["checks"] if c["status"] != "ok"]
    assert [c["name"] for c in failing] == ["adapter vendor"] and failing[0][
        "status"
    ] == "unreachable"
    assert "could not connect; nothing was sent" in failing[0]["detail"]


def test_a_wrong_path_or_token_fails_the_probe_as_configuration(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    wrong_path = write(
        sandbox, tmp_path, vendor__status={"path": "/v2/subscriptions/{subscription_id}"}
    )
    done = cli(sandbox, "check", "-c", str(wrong_path))
    assert done.returncode == 2
    assert (
        "CONFIG      adapter vendor" in done.stdout and "HTTP 404 no_route from GET" in done.stdout
    )
    other = Sandbox(generate=1, vendor_token="another-token-1234")
    with other:
        wrong_token = write(other, tmp_path, connect={"endpoint": sandbox.endpoint})
        env_done = subprocess.run(
            [sys.executable, "-m", "processor", "check", "-c", str(wrong_token)],
            env={**os.environ, **sandbox.environ()},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert env_done.returncode == 2 and "HTTP 401 unauthorized" in env_done.stdout
    assert sandbox.vendor_token not in env_done.stdout + env_done.stderr


def test_unreachable_connect_is_exit_3_and_a_missing_product_exit_2(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    down = write(
        sandbox,
        tmp_path,
        connect={
            "endpoint": f"http://127.0.0.1:{free_port()}/public/v1",
            "retry": {"backoff_base": 0.05, "backoff_max": 0.1},
        },
    )
    done = cli(sandbox, "check", "-c", str(down))
    assert done.returncode == 3 and "UNREACHABLE connect" in done.stdout
    missing = write(sandbox, tmp_path, products={"PRD-000-000-000": {}})
    done = cli(sandbox, "check", "-c", str(missing))
    assert (
        done.returncode == 2
        and "CONFIG      product PRD-000-000-000  not visible to this API key" in done.stdout
    )


def test_run_with_a_vendor_rejecting_the_token_says_so_at_once_and_readyz_is_503(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The daemon starts all the same (it rides out a vendor outage), but one line on stderr names
    the adapter and the reason within seconds, /readyz answers 503 with that reason, and the
    token appears nowhere."""
    import time

    import requests

    port = free_port()
    wrong = "rejected-token-5678-do-not-print"
    config = write(
        sandbox,
        tmp_path,
        http={"enabled": True, "host": "127.0.0.1", "port": port},
        processing={"poll_interval": 0.5, "shutdown_timeout": 5},
    )
    env = {**os.environ, **sandbox.environ(), "SANDBOX_VENDOR_TOKEN": wrong}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "processor", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline, body = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.2)
                continue
            body = answer.json()
            if "vendor vendor" in body.get("errors", {}):
                assert answer.status_code == 503
                break
            time.sleep(0.2)
        assert body is not None and "vendor vendor" in body["errors"], body
        assert body["vendors"] == {"vendor": False}
        assert "401" in body["errors"]["vendor vendor"], body
        assert wrong not in json.dumps(body)
    finally:
        daemon.terminate()
        out, err = daemon.communicate(timeout=30)
    lines = [line for line in err.splitlines() if "probe failed" in line]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("cancel-processor: warning: adapter vendor: probe failed (config)")
    assert "HTTP 401" in lines[0] and "/readyz" in lines[0]
    assert wrong not in out + err and sandbox.vendor_token not in out + err
