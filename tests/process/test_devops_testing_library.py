"""CloudBlue's connect-devops-testing-library against the mock: its Builder and Dispatcher
(``use_specs=False``) create a cancel with a fulfillment parameter, update it, and wait while a
processor approves it. The library runs in its own virtualenv (tests/devops_env.py), driven as a
subprocess against the mock on a free local port; the test checks what the mock recorded."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, approve_template, create_app
from processor.ops.serving import ServerThread

from .. import devops_env
from ..conftest import need_or_skip
from ..mock_support import KEY_ID, START

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def devops_python() -> Path:
    try:
        return devops_env.devops_python()
    except devops_env.DevopsEnvError as exc:
        need_or_skip(str(exc))
        raise


def test_builder_and_dispatcher_create_update_and_see_a_cancel_approved(
    devops_python: Path, tmp_path: Path
) -> None:
    app = create_app(MarketplaceSettings(generate=10, seed=12, clock=MockClock(START)))
    asset = next(a for a in app.store.assets.values() if a.status == "active" and a.request_ids)
    request_file = tmp_path / "request.json"
    template = approve_template(asset.product)
    param = next(p["id"] for p in asset.product.params if p.get("phase") == "fulfillment")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["CONNECT_API_KEY"] = app.config.api_key
    with ServerThread(app) as server:
        purchase = requests.get(
            f"{server.url}/public/v1/requests/{asset.request_ids[0]}",
            headers={"Authorization": app.config.api_key},
            timeout=10,
        )
        request_file.write_text(purchase.text, encoding="utf-8")
        done = subprocess.run(
            [str(devops_python), str(devops_env.SCRIPT), "--endpoint", server.url + "/public/v1",
             "--request-file", str(request_file), "--param", param, "--template", template],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr[-3000:]}"
    assert app.config.api_key not in done.stdout + done.stderr
    summary = json.loads(done.stdout)
    request = app.store.requests[summary["created"]["id"]]
    assert summary["created"] == {"id": request.id, "status": "pending", "type": "cancel"}
    assert summary["updated"] == {"status": "pending", "value": "SUB-DEVOPS-2"}
    assert summary["approvals"] == 1 and summary["approved"]["status"] == "approved"
    assert summary["approved"]["value"] == "SUB-DEVOPS-2"
    assert summary["approved"]["activation_key"] == request.activation_key != ""
    assert request.asset is asset and asset.status == "terminated"
    assert asset.params[param] == "SUB-DEVOPS-2"  # the fulfillment value became the subscription's
    events = [(e.event, e.actor) for e in app.store.ledger.since(0, 10_000, request.id)]
    assert ("created", KEY_ID) in events and ("updated", KEY_ID) in events
    assert [e for e in events if e[0] == "status"] == [("status", KEY_ID)]  # pending -> approved
