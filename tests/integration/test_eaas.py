"""The Connect EaaS events application, driven as connect-extension-runner drives it.

The application is built with a ConnectClient, a logger and the variables, and its handler gets a
request payload. Connect is mocked at the URL level (connect-openapi-client's
``ConnectClientMocker``, on ``responses``); the vendor is always the live mock vendor over HTTP,
whose ledger says what really happened. Against the live mock marketplace: test_eaas_live.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from connect.client import ConnectClient
from connect.client.testing import ConnectClientMocker
from connect.eaas.core.enums import ResultType
from connect.eaas.core.validation.validators import (
    validate_eventsapp,
    validate_extension_json,
    validate_variables,
)

from cancel_sandbox.local import SANDBOX_VENDOR_TOKEN, VENDOR_TOKEN_ENV, Sandbox, adapter_options
from processor.config.schema import Config, ConfigError
from processor.eaas.app import EVENT_TYPE, RUNTIMES, CancelEventsApplication
from processor.eaas.runtimes import RuntimeCache, gateway_client
from processor.eaas.variables import (
    APPROVE_TEMPLATES,
    CONFIG_PATH,
    CONFIG_YAML,
    DECLARED,
    JOURNAL_URL,
    SQLITE_PERSISTENT,
    VENDOR_TOKEN,
    config_from_variables,
)
from processor.journal import open_journal
from processor.journal.base import State

CONNECT = "https://connect.example.test/public/v1"
API_KEY = "ApiKey SU-000-000-001:eaas-test-secret-value"
PRODUCT, TEMPLATE = "PRD-100-200-300", "TL-100-200-300"
# What Connect's event definitions say about this event (see the reference's EaaS section).
CANCEL_STATUSES = ["pending", "approved", "failed", "scheduled", "revoking", "revoked"]

log = logging.getLogger("eaas.test")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The runtime cache is process-wide, like the runner's, and the application exports adapter
    secrets into os.environ: both are put back after each test."""
    for name in (VENDOR_TOKEN, VENDOR_TOKEN_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(
            name
        )  # recorded as absent: restored as absent, whatever the test exported
    yield
    RUNTIMES.close()


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """Only the vendor is used by the URL-mocked tests (Connect is ConnectClientMocker there)."""
    with Sandbox(generate=0) as sandbox:
        yield sandbox


def cancel_request(
    request_id: str, subscription: str | None = "SUB-1001", status: str = "pending"
) -> dict[str, Any]:
    params = [{"id": "subscription_id", "value": subscription}] if subscription else []
    return {
        "id": request_id,
        "type": "cancel",
        "status": status,
        "created": "2026-11-01T10:00:00+00:00",
        "marketplace": {"id": "MP-12345"},
        "asset": {
            "id": f"AS-{request_id[3:]}",
            "status": "active",
            "params": params,
            "product": {"id": PRODUCT},
            "connection": {"id": "CT-1", "type": "production"},
            "tiers": {"customer": {"id": "TA-1", "name": "Customer"}},
        },
    }


def processor_yaml(vendor_url: str, journal_url: str, **processing: Any) -> str:
    options = {
        **adapter_options(vendor_url, "key"),
        "auth": {"type": "bearer", "env": VENDOR_TOKEN},
    }
    return yaml.safe_dump(
        {
            "connect": {"retry": {"max_attempts": 2, "backoff_base": 0.01, "backoff_max": 0.05}},
            "journal": {"url": journal_url, "lease_seconds": 30},
            "processing": {"notes": False, "retry_base": 0.2, "retry_max": 1, **processing},
            "adapters": {"vendor": {"type": "http", "options": options}},
            "defaults": {"adapter": "vendor", "lookup_template": False},
            "log": {"level": "warning"},
        }
    )


def variables_for(box: Sandbox, tmp_path: Path, **processing: Any) -> dict[str, str]:
    """The variables an operator sets: the YAML, the template per product, the vendor secret."""
    declared = {v["name"]: v["initial_value"] for v in DECLARED}
    return {
        **declared,
        CONFIG_YAML: processor_yaml(
            box.vendor.url, f"sqlite:///{tmp_path}/journal.db", **processing
        ),
        APPROVE_TEMPLATES: json.dumps({PRODUCT: TEMPLATE}),
        VENDOR_TOKEN: SANDBOX_VENDOR_TOKEN,
        SQLITE_PERSISTENT: "yes",  # the test's directory outlives the "container"
    }


def application(
    variables: dict[str, str],
    client: ConnectClient | None = None,
    cls: type[CancelEventsApplication] = CancelEventsApplication,
) -> CancelEventsApplication:
    """As the runner builds it for each task: (client, logger, config)."""
    runner_client = client or ConnectClient(
        API_KEY,
        endpoint=CONNECT,
        max_retries=3,
        default_headers={"EAAS_TASK_ID": "TQ-1", "EAAS_EXT_ID": "SRVC-1"},
    )
    return cls(runner_client, log, variables)


def vendor_effects(box: Sandbox) -> list[dict[str, Any]]:
    return [e for e in box.vendor_ledger()["effects"] if e["action"] == "terminate"]


def journal_state(tmp_path: Path, request_id: str) -> State | None:
    journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        record = journal.get(request_id)
        return record.state if record else None
    finally:
        journal.close()


# -- declared as connect-eaas-core expects ---------------------------------------------------------


def test_the_extension_passes_connect_eaas_core_validation() -> None:
    context: dict[str, Any] = {
        "extension_classes": {"eventsapp": CancelEventsApplication},
        "event_definitions": {EVENT_TYPE: {"object_statuses": CANCEL_STATUSES}},
    }
    described = validate_extension_json(context)
    context.update(described.context)
    results = [described, validate_eventsapp(context), validate_variables(context)]
    problems = [item.message for result in results for item in result.items]
    assert problems == []
    descriptor = CancelEventsApplication.get_descriptor()
    assert {
        "name",
        "description",
        "version",
        "audience",
        "readme_url",
        "changelog_url",
        "icon",
    } <= set(descriptor)
    assert CancelEventsApplication.get_events() == [
        {
            "method": "handle_cancel_request",
            "event_type": EVENT_TYPE,
            "statuses": ["pending", "scheduled", "revoking"],
        },
    ]
    assert [s["method"] for s in CancelEventsApplication.get_schedulables()] == ["run_due_timers"]
    secure = {v["name"] for v in CancelEventsApplication.get_variables() if v["secure"]}
    assert secure == {JOURNAL_URL, VENDOR_TOKEN}


# -- Connect mocked at the URL level ---------------------------------------------------------------


def test_a_pending_request_is_terminated_then_approved(box: Sandbox, tmp_path: Path) -> None:
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]) as connect:
        connect.requests["PR-1000-0001-0001-001"]("approve").post(
            return_value={"id": "PR-1000-0001-0001-001", "status": "approved"},
            match_body={"template_id": TEMPLATE},
        )
        response = application(variables_for(box, tmp_path)).handle_cancel_request(
            cancel_request("PR-1000-0001-0001-001")
        )
    assert response.status == ResultType.SUCCESS
    assert [e["subscription_id"] for e in vendor_effects(box)] == ["SUB-1001"]
    assert journal_state(tmp_path, "PR-1000-0001-0001-001") is State.APPROVED


def test_a_repeated_delivery_neither_calls_the_vendor_nor_connect_again(
    box: Sandbox, tmp_path: Path
) -> None:
    variables, request = variables_for(box, tmp_path), cancel_request("PR-1000-0001-0002-001")
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]) as connect:
        connect.requests[request["id"]]("approve").post(
            return_value={"id": request["id"], "status": "approved"}
        )
        first = application(variables).handle_cancel_request(request)
    calls = box.vendor_ledger()["summary"]["calls"]
    with ConnectClientMocker(
        CONNECT, exclude=[box.vendor.url]
    ):  # nothing registered: any call would fail
        again = application(variables).handle_cancel_request(request)
    assert first.status == again.status == ResultType.SUCCESS
    assert box.vendor_ledger()["summary"]["calls"] == calls
    assert len(vendor_effects(box)) == 1


def test_a_vendor_refusal_fails_the_request_with_the_vendors_reason(
    box: Sandbox, tmp_path: Path
) -> None:
    request = cancel_request(
        "PR-1000-0001-0003-001", subscription="SUB-2007"
    )  # the mock refuses *7
    variables = variables_for(box, tmp_path)
    no_hold = yaml.safe_load(variables[CONFIG_YAML])
    no_hold["guard"] = {"hold": 0}  # the refusal reaches Connect at once (the hold: below)
    variables[CONFIG_YAML] = yaml.safe_dump(no_hold)
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]) as connect:
        connect.requests[request["id"]]("fail").post(
            return_value={"id": request["id"], "status": "failed"}
        )
        response = application(variables).handle_cancel_request(request)
    assert response.status == ResultType.SUCCESS
    assert vendor_effects(box) == []
    assert journal_state(tmp_path, request["id"]) is State.FAILED


def test_a_held_refusal_reschedules_the_task_until_the_hold_is_over(
    box: Sandbox, tmp_path: Path
) -> None:
    """With the default hold, the refusal is recorded and Connect is not told yet: the task comes
    back when the hold is over (the journal's timer), and no Connect action is taken now."""
    request = cancel_request("PR-1000-0001-0013-001", subscription="SUB-2017")  # refuses: *7
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]):  # any Connect call would fail
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert response.status == ResultType.RESCHEDULE
    assert 590 <= (response.countdown or 0) <= 600  # guard.hold: ten minutes
    assert journal_state(tmp_path, request["id"]) is State.HELD


@pytest.mark.parametrize(
    ("bent", "why"),
    [
        ({"quantity": float("nan")}, "NaN is not a number JSON allows"),
        ({}, None),  # nested 70 deep, built below
        ({"n": 10**40}, "an integer longer than 30 digits"),
    ],
)
def test_a_payload_the_connect_boundary_would_refuse_is_parked_never_acted_on(
    box: Sandbox, tmp_path: Path, bent: dict[str, Any], why: str | None
) -> None:
    """The runner parses its websocket messages itself: its payloads meet the same JSON rules as
    Connect's answers over HTTP (processor.model.admitted), and one that breaks them is parked
    as malformed with the reason, with no vendor call and no Connect action."""
    request = {**cancel_request("PR-1000-0001-0009-001"), **bent}
    if why is None:  # nesting past the cap: 70 levels
        nested: Any = []
        for _ in range(70):
            nested = [nested]
        request["deep"], why = nested, "nested deeper than 64 levels"
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]):  # any Connect call fails
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert response.status == ResultType.SKIP
    assert box.vendor_ledger()["summary"]["calls"] == 0
    journal = open_journal(f"sqlite:///{tmp_path}/journal.db")
    try:
        record = journal.get(request["id"])
    finally:
        journal.close()
    assert record is not None and record.state is State.PARKED
    assert why in (record.reason or ""), record.reason


def test_a_vendor_outage_reschedules_at_the_journals_retry_time(
    box: Sandbox, tmp_path: Path
) -> None:
    requests.put(f"{box.vendor.url}/admin/faults", json={"error_rate": 1.0}, timeout=10)
    request = cancel_request("PR-1000-0001-0004-001")
    # First retry 60-120 s later (retry_base 120, jittered): the countdown must follow the journal.
    variables = variables_for(box, tmp_path, retry_base=120, retry_max=120)
    with ConnectClientMocker(
        CONNECT, exclude=[box.vendor.url]
    ):  # nothing registered: no fail, no approve
        response = application(variables).handle_cancel_request(request)
    assert response.status == ResultType.RESCHEDULE
    assert 60 <= response.countdown <= 121
    assert journal_state(tmp_path, request["id"]) is State.NEW  # nothing done, nothing refused
    # Delivered again before it is due: still rescheduled, and the vendor is not called early.
    calls = box.vendor_ledger()["summary"]["calls"]
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]):
        early = application(variables).handle_cancel_request(request)
    assert early.status == ResultType.RESCHEDULE and early.countdown >= 30
    assert box.vendor_ledger()["summary"]["calls"] == calls


def test_a_request_that_needs_a_person_is_skipped_never_failed(
    box: Sandbox, tmp_path: Path
) -> None:
    request = cancel_request("PR-1000-0001-0005-001", subscription=None)  # no vendor id: parked
    with ConnectClientMocker(
        CONNECT, exclude=[box.vendor.url]
    ):  # a fail call would not be answered
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert response.status == ResultType.SKIP
    assert "parked for a person" in response.output and "subscription id" in response.output
    assert journal_state(tmp_path, request["id"]) is State.PARKED


@pytest.mark.parametrize("status", ["scheduled", "revoking"])
def test_other_statuses_are_skipped_with_the_reason(
    box: Sandbox, tmp_path: Path, status: str
) -> None:
    request = cancel_request("PR-1000-0001-0006-001", status=status)
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]):
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert response.status == ResultType.SKIP and status in response.output
    assert vendor_effects(box) == []


def test_a_product_that_is_not_configured_is_skipped(box: Sandbox, tmp_path: Path) -> None:
    request = cancel_request("PR-1000-0001-0007-001")
    request["asset"]["product"]["id"] = "PRD-999-999-999"
    with ConnectClientMocker(CONNECT, exclude=[box.vendor.url]):
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert (
        response.status == ResultType.SKIP
        and "PRD-999-999-999 is not configured" in response.output
    )


@pytest.mark.parametrize(
    "problem, named",
    [
        ({CONFIG_YAML: "journal:\n  url: ftp://nowhere\n"}, f"variable {CONFIG_YAML}: journal.url"),
        ({JOURNAL_URL: "mysql://app:pw-in-a-secure-variable@db/cancels"}, "journal.url"),
        ({APPROVE_TEMPLATES: "{PRD-1: TL-1}"}, f"variable {APPROVE_TEMPLATES}: not valid JSON"),
    ],
)
def test_an_unusable_configuration_reschedules_and_names_the_variable(
    box: Sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    problem: dict[str, str],
    named: str,
) -> None:
    variables = {**variables_for(box, tmp_path), **problem}
    with caplog.at_level(logging.ERROR, logger=log.name):
        response = application(variables).handle_cancel_request(
            cancel_request("PR-1000-0001-0008-001")
        )
    assert response.status == ResultType.RESCHEDULE and response.countdown >= 300
    assert named in caplog.text
    for secret in (SANDBOX_VENDOR_TOKEN, "eaas-test-secret-value", "pw-in-a-secure-variable"):
        assert secret not in caplog.text
    assert len(RUNTIMES) == 0  # a failed build is not cached: the next task tries again


def test_variables_left_at_their_declared_placeholders_count_as_unset(tmp_path: Path) -> None:
    declared = {v["name"]: v["initial_value"] for v in DECLARED}
    assert config_from_variables(declared, environ={}) == Config()
    config_file = tmp_path / "processor.yaml"
    config_file.write_text(
        "processing: {concurrency: 3}\nadapters: {none: {type: noop}}\n", encoding="utf-8"
    )
    with pytest.raises(
        ConfigError, match=f"variable {APPROVE_TEMPLATES}: products.{PRODUCT}: no adapter"
    ):
        config_from_variables(
            {CONFIG_PATH: str(config_file), APPROVE_TEMPLATES: json.dumps({PRODUCT: TEMPLATE})}
        )
    config = config_from_variables(
        {
            **declared,
            CONFIG_PATH: str(config_file),
            JOURNAL_URL: "postgresql://app@db/cancels",
            "CANCEL_PROCESSOR_PROCESSING__POLL_INTERVAL": "7",
            "CANCEL_PROCESSOR_DEFAULTS__ADAPTER": "none",
            APPROVE_TEMPLATES: json.dumps({PRODUCT: TEMPLATE}),
        },
        environ={},
    )
    assert (config.processing.concurrency, config.processing.poll_interval) == (3, 7)
    assert config.journal.url == "postgresql://app@db/cancels"
    assert config.template_for(PRODUCT) == TEMPLATE


# -- the gateway's client and the shared runtimes --------------------------------------------------


def test_the_gateway_client_keeps_the_runners_credentials_but_not_its_retries() -> None:
    runner = ConnectClient(
        API_KEY,
        endpoint=CONNECT,
        max_retries=3,
        default_headers={
            "EAAS_EXT_ID": "SRVC-1",
            "EAAS_TASK_ID": "TQ-1",
            "EAAS_TASK_TYPE": "background",
            "User-Agent": "connect-extension-runner/38",
        },
    )
    client = gateway_client(runner, Config())
    assert (client.endpoint, client.api_key, client.max_retries) == (CONNECT, API_KEY, 0)
    assert (
        client.default_headers["EAAS_EXT_ID"] == "SRVC-1"
        and "EAAS_TASK_ID" not in client.default_headers
    )
    assert client.default_headers["User-Agent"].startswith(
        "connect-extension-runner/38 connect-cancel-processor/"
    )
    assert client.resourceset_append is False


def test_tasks_share_one_runtime_until_the_variables_change(box: Sandbox, tmp_path: Path) -> None:
    variables = variables_for(box, tmp_path)
    client = ConnectClient(API_KEY, endpoint=CONNECT)
    with RUNTIMES.use(variables, client) as first, RUNTIMES.use(dict(variables), client) as second:
        assert first is second
        assert (
            first.marketplace.client.max_retries == 0
            and first.marketplace.client.endpoint == CONNECT
        )
    changed = {**variables, APPROVE_TEMPLATES: json.dumps({PRODUCT: "TL-999"})}
    with RUNTIMES.use(changed, client) as third:
        assert third is not first and third.config.template_for(PRODUCT) == "TL-999"


class FakeRuntime:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_retired_runtime_is_closed_only_after_its_last_task() -> None:
    built: list[FakeRuntime] = []

    def build(variables: Any, client: Any) -> Any:
        built.append(FakeRuntime())
        return built[-1]

    cache = RuntimeCache(build, size=1)
    client = ConnectClient(API_KEY, endpoint=CONNECT)
    with cache.use({"A": "1"}, client) as old:
        with cache.use({"A": "2"}, client) as new:  # evicts the old one while a task still uses it
            assert not old.closed
        assert not old.closed and not new.closed
    assert old.closed and not new.closed
    cache.close()
    assert new.closed and len(built) == 2


def test_a_delivery_of_a_task_still_running_in_this_process_is_turned_away(
    box: Sandbox, tmp_path: Path
) -> None:
    request = cancel_request("PR-1000-0001-0009-001")
    with CancelEventsApplication.in_flight.hold(
        request["id"]
    ) as mine:  # the first delivery, still running
        assert mine
        response = application(variables_for(box, tmp_path)).handle_cancel_request(request)
    assert response.status == ResultType.RESCHEDULE
    assert not (
        tmp_path / "journal.db"
    ).exists()  # turned away before anything was opened or recorded
    assert box.vendor_ledger()["summary"]["calls"] == 0
