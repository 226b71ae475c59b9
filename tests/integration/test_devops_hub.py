"""The mock marketplace's DevOps surface over real HTTPS on loopback, spoken to as
connect-extension-runner speaks to it (websocket protocol version 2, the REST routes), with a
websocket client of this suite; tests/process/test_cextrun_devops.py runs the released runner
against it. Also the HTTPS and DevOps options of ``mock-marketplace`` and the variables file."""

from __future__ import annotations

import argparse
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cancel_sandbox.devops import (
    EVENT_TYPE,
    DevopsGateway,
    DevopsHub,
    DevopsSettings,
    IndexAnswer,
    Variable,
    VariablesError,
    load_variables,
    local_pki,
)
from cancel_sandbox.marketplace import MarketplaceSettings, create_app
from cancel_sandbox.marketplace.cli import configure_parser, run
from processor.eaas.variables import (
    APPROVE_TEMPLATES,
    CONFIG_YAML,
    clear_secrets,
    config_from_variables,
)
from processor.ops.serving import ServerThread
from tests.conftest import REPO

ENV = "ENV-1234-5678-01"


class Hub:
    def __init__(self, url: str, ca: Path, key: str, hub: DevopsHub) -> None:
        self.url, self.ca, self.key, self.hub = url, ca, key, hub
        self.tls = ssl.create_default_context(cafile=str(ca))

    def socket(self, key: str | None = None, env: str = ENV, kind: str = "background") -> Any:
        return connect(
            f"wss://127.0.0.1:{self.url.rsplit(':', 1)[1]}/public/v1/devops/ws/{env}/INS-1"
            f"?running_tasks=0&running_scheduled_tasks=0&runner_type={kind}",
            additional_headers={"Authorization": key or self.key},
            ssl=self.tls,
            open_timeout=10,
        )

    def get(self, path: str, key: str | None = None) -> requests.Response:
        return requests.get(
            f"{self.url}{path}",
            headers={"Authorization": key or self.key},
            verify=str(self.ca),
            timeout=10,
        )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    pki = local_pki(tmp_path / "tls")
    market = create_app(MarketplaceSettings(generate=2, seed=5))
    settings = DevopsSettings(
        api_key=market.config.api_key,
        environment_id=ENV,
        variables=[Variable("PLAIN", "shown"), Variable("TOKEN", "hidden-value", secure=True)],
        scan_interval=0.05,
    )
    devops = DevopsHub(market.store, settings)
    tls = {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key)}
    with ServerThread(DevopsGateway(market, devops), **tls) as server:
        yield Hub(f"https://127.0.0.1:{server.port}", pki.ca, settings.api_key, devops)


def setup_request(statuses: list[str]) -> dict[str, Any]:
    return {
        "version": 2,
        "message_type": "setup_request",
        "data": {
            "event_subscriptions": {EVENT_TYPE: statuses},
            "variables": [
                {"name": "DECLARED", "initial_value": "initial", "secure": False},
                {"name": "PLAIN", "initial_value": "not this one", "secure": False},
            ],
            "schedulables": [{"method": "run_due_timers", "name": "Run", "description": "d"}],
            "runner_version": "43.1",
            "model_type": "setup_request",
        },
    }


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))  # type: ignore[no-any-return]


def answer(ws: ClientConnection, task: dict[str, Any], result: str, countdown: int = 0) -> None:
    data = {**task["data"], "output": {"result": result, "countdown": countdown, "runtime": 0.1}}
    ws.send(json.dumps({"version": 2, "message_type": "task", "data": data}))


def test_the_local_ca_serves_https_and_is_reused_while_valid(tmp_path: Path, hub: Hub) -> None:
    assert hub.get("/healthz").status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{hub.url}/healthz", timeout=10)  # the system's CAs do not know it
    first = local_pki(tmp_path / "again")
    ca = first.ca.read_bytes()
    assert local_pki(tmp_path / "again").ca.read_bytes() == ca
    assert oct(first.server_key.stat().st_mode & 0o777) == "0o600"
    first.server_cert.write_text("not a certificate")
    assert local_pki(tmp_path / "again").ca.read_bytes() != ca  # broken: made anew
    assert local_pki(tmp_path / "again", ("10.1.2.3",)).ca.exists()  # another host: made anew


def test_the_rest_routes_the_runner_calls(hub: Hub) -> None:
    accounts = hub.get("/public/v1/accounts?limit=1")
    assert accounts.status_code == 200 and accounts.headers["Connect-Version"].startswith("43.")
    assert accounts.json()[0]["id"].startswith("VA-")
    # Every API answer carries the header, the marketplace's too.
    assert hub.get("/public/v1/requests?limit=1").headers["Connect-Version"]
    definitions = hub.get("/public/v1/devops/event-definitions").json()
    assert definitions[0]["type"] == EVENT_TYPE and "revoking" in definitions[0]["object_statuses"]
    service = f"SRVC-{ENV[4:-3]}"
    base = f"/public/v1/devops/services/{service}/environments/{ENV}"
    assert hub.get(f"{base}/schedules/EFS-0000-0001").json()["method"] == "run_due_timers"
    assert hub.get(f"{base}/schedules/EFS-9").status_code == 404
    assert hub.get(f"/public/v1/devops/services/{service}/installations/EIN-0000-0000-0001").ok
    assert (
        hub.get(f"/public/v1/devops/services/SRVC-0000-0000/environments/{ENV}").status_code == 404
    )
    assert hub.get("/public/v1/accounts", key="ApiKey SU-1:wrong").status_code == 401
    assert hub.get(base, key="ApiKey SU-1:wrong").status_code == 401


def test_a_runner_with_a_wrong_key_or_environment_is_refused_at_the_handshake(hub: Hub) -> None:
    for kwargs in ({"key": "ApiKey SU-000-000-000:wrong"}, {"env": "ENV-9999-9999-01"}):
        with pytest.raises(InvalidStatus) as refused:
            hub.socket(**kwargs)
        assert refused.value.response.status_code == 403
    assert hub.hub.runners == []


def test_a_first_message_that_is_not_a_setup_request_closes_the_connection(hub: Hub) -> None:
    with hub.socket() as ws:
        ws.send(json.dumps({"version": 1, "message_type": "capabilities", "data": {}}))
        with pytest.raises(Exception, match="1002"):
            ws.recv(timeout=10)
    assert hub.hub.runners == []


def test_setup_then_a_task_per_pending_cancel_redelivered_after_a_reschedule(hub: Hub) -> None:
    requests_ = hub.hub.store.requests.values()
    pending = sorted(r.id for r in requests_ if r.type == "cancel" and r.status == "pending")
    assert len(pending) == 2
    with hub.socket() as ws:
        ws.send(json.dumps(setup_request(["pending"])))
        setup = receive(ws)
        assert setup["message_type"] == "setup_response" and setup["version"] == 2
        variables = {v["name"]: v for v in setup["data"]["variables"]}
        assert variables["PLAIN"]["value"] == "shown"  # the file wins over the initial value
        assert variables["DECLARED"]["value"] == "initial"  # declared, not set: created
        assert variables["TOKEN"] == {"name": "TOKEN", "value": "hidden-value", "secure": True}
        assert setup["data"]["logging"]["meta"]["service_id"] == f"SRVC-{ENV[4:-3]}"
        tasks = [receive(ws), receive(ws)]
        assert sorted(t["data"]["input"]["object_id"] for t in tasks) == pending
        first = tasks[0]
        assert first["data"]["options"]["task_category"] == "background"
        assert first["data"]["options"]["installation_id"] == "EIN-0000-0000-0001"
        answer(ws, first, "reschedule", countdown=0)
        answer(ws, tasks[1], "success")
        began = time.monotonic()
        again = receive(ws)  # at least a second later, as its countdown says
        assert time.monotonic() - began >= 0.5
        assert again["data"]["input"]["object_id"] == first["data"]["input"]["object_id"]
        answer(ws, again, "success")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            t["result"] is None for t in hub.get("/admin/devops").json()["tasks"]
        ):
            time.sleep(0.05)
        ws.send(json.dumps({"version": 2, "message_type": "shutdown"}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not hub.hub.runners[0].shutdown_received:
            time.sleep(0.05)
    seen = hub.get("/admin/devops").json()
    assert [t["result"]["result"] for t in seen["tasks"]] == ["reschedule", "success", "success"]
    assert seen["runners"][0]["shutdown_received"]
    assert "hidden-value" not in json.dumps(seen)  # the snapshot shows no variable values


def test_garbage_after_the_setup_is_dropped_and_the_session_kept(hub: Hub) -> None:
    with hub.socket() as ws:
        ws.send(json.dumps(setup_request([])))
        assert receive(ws)["message_type"] == "setup_response"
        for junk in ("not json", "[]", '{"message_type": "task"}', '{"message_type": "task", '
                     '"data": {"options": {"task_id": "TQ-unknown"}}}'):  # fmt: skip
            ws.send(junk)
        requests.post(
            f"{hub.url}/admin/devops/schedules/EFS-0000-0001/run", verify=str(hub.ca), timeout=10
        )
        assert receive(ws)["data"]["input"]["object_id"] == "EFS-0000-0001"  # still served


def test_the_release_lookup_is_answered_locally_and_nothing_else(tmp_path: Path) -> None:
    pki = local_pki(tmp_path / "tls")
    with IndexAnswer(pki.index_cert, pki.index_key, "43.1") as index:
        proxies = {"https": index.proxy_url}
        found = requests.get(
            "https://pypi.org/pypi/connect-extension-runner/json",
            proxies=proxies, verify=str(pki.ca), timeout=10,
        )  # fmt: skip
        assert found.json()["releases"] == {"43.1": []} and index.lookups == 1
        other_path = requests.get(
            "https://pypi.org/simple/anything/", proxies=proxies, verify=str(pki.ca), timeout=10
        )
        assert other_path.status_code == 404
        with pytest.raises(requests.exceptions.ProxyError):
            requests.get("https://example.com/", proxies=proxies, verify=str(pki.ca), timeout=10)
        assert index.lookups == 1


def test_a_schedule_run_on_request_and_nothing_for_the_interactive_worker(hub: Hub) -> None:
    with hub.socket(kind="interactive") as quiet, hub.socket() as ws:
        quiet.send(json.dumps(setup_request(["pending"])))
        ws.send(json.dumps(setup_request([])))  # no statuses: only the schedule
        assert receive(quiet)["message_type"] == "setup_response"
        assert receive(ws)["message_type"] == "setup_response"
        run = requests.post(
            f"{hub.url}/admin/devops/schedules/EFS-0000-0001/run", verify=str(hub.ca), timeout=10
        )
        assert run.status_code == 202
        task = receive(ws)
        assert task["data"]["options"]["task_category"] == "scheduled"
        assert task["data"]["input"] == {
            "event_type": "scheduled_execution",
            "object_id": "EFS-0000-0001",
            "data": {},
        }
        with pytest.raises(TimeoutError):
            quiet.recv(timeout=1)  # the pending cancels go to the background worker only


def test_the_variables_file_and_its_errors(tmp_path: Path) -> None:
    templates = {"PRD-1": "TL-1"}
    example = load_variables(
        REPO / "config" / "devops.variables.example.yaml", templates, environ={}
    )
    values = {v.name: v.value for v in example}
    assert json.loads(values[APPROVE_TEMPLATES]) == templates
    assert [v.name for v in example if v.secure] == ["VENDOR_API_TOKEN"]
    assert clear_secrets(yaml.safe_load(values[CONFIG_YAML])) == []
    assert set(config_from_variables(values, environ={}).products) == {"PRD-1"}

    path = tmp_path / "vars.yaml"
    for text, problem in [
        ("- a list", "expected a mapping"),
        ("A: {value: x, env: Y}", "exactly one of"),
        ("A: {env: NOT_SET_HERE, secure: true}", "NOT_SET_HERE is not set"),
        ("A: {from_mock: products}", "only approve_templates"),
        ("9A: x", "not a variable name"),
        ("A: {value: x, secure: maybe}", "true or false"),
        ("A: [unclosed", "not valid YAML"),
        ("A: yes", "quote the value"),
        ("A: null", "a string or a mapping"),
    ]:
        path.write_text(text)
        with pytest.raises(VariablesError, match=problem):
            load_variables(path, templates, environ={})
    path.write_text("A: {env: SECRET_HERE, secure: true}")
    with pytest.raises(VariablesError) as missing:
        load_variables(path, templates, environ={"SECRET_HERE": ""})
    assert "SECRET_HERE" in str(missing.value)
    taken = load_variables(path, templates, environ={"SECRET_HERE": "s3cret"})
    assert taken == [Variable("A", "s3cret", secure=True)] and "s3cret" not in repr(taken)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--devops"], "--devops needs HTTPS"),
        (["--tls-cert", "c.pem"], "go together"),
        (["--tls-dir", "d", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "not with --tls-cert"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "no such file"),
        (["--devops-variables", "v.yaml"], "needs --devops"),
        (["--tls-dir", "d", "--devops", "--devops-variables", "nope.yaml"], "cannot read it"),
        (["--tls-dir", "d", "--devops", "--devops-environment", "prod"], "ENV-"),
    ],
)
def test_unusable_https_and_devops_options_exit_2_saying_why(
    argv: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert run(parser.parse_args(["--generate", "0", *argv])) == 2
    assert problem in capsys.readouterr().err
