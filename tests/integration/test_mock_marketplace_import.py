"""Real Connect payloads in: each public fixture is imported and served back unchanged.

The fixtures (../shared/reference/fixtures) are verbatim API answers from public repositories,
with their irregularities: a phone/checkbox parameter's ``structured_value``, ``period: null``,
an empty ``external_id``, an assignee object, a 2019 shape without ``asset.status``. Each is
imported over HTTP (``POST /admin/requests``, the seed file's ``connect_requests``, the
``--import`` option) and compared with what ``GET /requests/{id}`` answers: equal as JSON,
except for what the mock itself changed afterwards (a status transition), which is checked too.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, SeedError, create_app
from processor.ops.serving import ServerThread

from ..conftest import SHARED, need_or_skip
from ..mock_support import START, Running, clock, fixture_payloads, start  # noqa: F401 - fixtures

FIXTURES = SHARED / "reference" / "fixtures"
TEMPLATE_FIXTURE = (
    "cloudblue__connect-processor-template-for-python__examples__connect_extension_processor_"
    "example__tests__ff_template.json"
)
REQUEST_FIXTURES = sorted(
    p.name for p in FIXTURES.glob("*.json") if p.name != TEMPLATE_FIXTURE
) or ["(fixtures absent)"]
TOOLKIT = "othercodes__connect-processors-toolkit__tests__api__request_asset.json"
PHP_SDK = (
    "cloudblue__connect-php-sdk__tests__Unit__ModelsTests__apiOutput__fulfillment_request.json"
)
ACRONIS = "cloudblue__processor-acronis-customer-centric__tests__requests__request.cancel.http.json"


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        need_or_skip(f"../shared/reference/fixtures/{name} is absent")
    return path


def _import(mp: Running, text: str | bytes) -> list[str]:
    body = text.encode("utf-8") if isinstance(text, str) else text
    response = mp.admin("POST", "/admin/requests", data=body)
    assert response.status_code == 201, response.text
    return list(response.json()["created"])


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_each_fixture_is_served_back_unchanged(start: Callable[..., Running], name: str) -> None:
    path = _fixture(name)
    payloads = fixture_payloads(path)
    mp = start(generate=5)
    assert _import(mp, path.read_bytes()) == [p["id"] for p in payloads]
    for payload in payloads:
        served = mp.get(f"/requests/{payload['id']}")
        assert served.status_code == 200
        assert served.json() == payload
        # Listed too, through the same filters a processor uses.
        listed = mp.get(f"/requests?eq(id,{payload['id']})&eq(status,{payload['status']})")
        assert listed.json() == [payload] and listed.headers["Content-Range"] == "items 0-0/1"


def test_an_imported_cancel_is_approved_and_keeps_what_the_mock_does_not_model(
    start: Callable[..., Running],
) -> None:
    payload = fixture_payloads(_fixture(TOOLKIT))[0]
    cancel = {**copy.deepcopy(payload), "id": payload["id"][:-3] + "002", "type": "cancel"}
    mp = start()
    _import(mp, json.dumps(cancel))
    fulfillment = "CAT_SUBSCRIPTION_ID"
    put = mp.call(
        "PUT",
        f"/requests/{cancel['id']}",
        {"asset": {"params": [{"id": fulfillment, "value": "S-9"}]}},
    )
    assert put.status_code == 200, put.text
    template = mp.store.products[payload["asset"]["product"]["id"]].approve_template()
    approved = mp.act(cancel["id"], "approve", {"template_id": template})
    assert approved.status_code == 200, approved.text
    served = mp.get(f"/requests/{cancel['id']}").json()
    changed = {k for k in served if served[k] != cancel.get(k)}
    assert changed == {
        "status", "updated", "events", "asset", "activation_key", "effective_date", "template",
    }  # fmt: skip
    assert served["status"] == "approved" and served["asset"]["status"] == "terminated"
    assert served["events"]["created"] == cancel["events"]["created"]
    params = {p["id"]: p for p in served["asset"]["params"]}
    assert params[fulfillment]["value"] == "S-9"
    # The checkbox parameter's structured_value and every other untouched part stay verbatim.
    assert params["CATEGORIES"] == next(
        p for p in cancel["asset"]["params"] if p["id"] == "CATEGORIES"
    )
    for key in ("tiers", "connection", "items", "configuration", "contract", "marketplace"):
        assert served["asset"][key] == cancel["asset"][key]
    assert served["previous_approved_request"] == cancel["previous_approved_request"]
    # The subscription is Connect's object with the new status.
    asset = mp.get(f"/assets/{cancel['asset']['id']}").json()
    assert asset["status"] == "terminated" and asset["tiers"] == cancel["asset"]["tiers"]


def test_a_2019_payload_without_asset_status_gains_one_only_when_it_changes(
    start: Callable[..., Running],
) -> None:
    payload = fixture_payloads(_fixture(ACRONIS))[0]
    mp = start()
    _import(mp, json.dumps(payload))
    assert "status" not in mp.get(f"/requests/{payload['id']}").json()["asset"]
    # tiers_setup is not an approvable status: Connect's rules hold for imported requests too.
    refused = mp.act(payload["id"], "approve", {"activation_tile": "Done"})
    assert refused.status_code == 400 and refused.json()["error_code"] == "REQ_003"


def test_the_assignee_becomes_a_user_that_requests_can_be_assigned_to(
    start: Callable[..., Running],
) -> None:
    payload = fixture_payloads(_fixture(PHP_SDK))[0]
    mp = start(generate=3)
    _import(mp, json.dumps(payload))
    user = payload["assignee"]
    assert mp.store.users[user["id"]]["email"] == user["email"]
    # Approved in Connect with a template this mock never saw: its render is the activation key.
    rendered = mp.get(f"/requests/{payload['id']}/render")
    assert rendered.status_code == 200 and rendered.text == payload["activation_key"] != ""
    other = next(mp.pending())
    assigned = mp.act(other.id, "assign", {"id": user["id"]})
    assert assigned.status_code == 200 and assigned.json()["assignee"]["email"] == user["email"]


def test_json_lines_and_a_bad_batch_that_changes_nothing(start: Callable[..., Running]) -> None:
    payloads = [fixture_payloads(_fixture(n))[0] for n in (TOOLKIT, PHP_SDK)]
    mp = start()
    before = len(mp.store.requests)
    broken = copy.deepcopy(payloads[1])
    del broken["asset"]["product"]["id"]
    lines = "\n".join(json.dumps(p) for p in (payloads[0], broken))
    refused = mp.admin("POST", "/admin/requests", data=lines.encode())
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "payload[1].asset.product.id: a non-empty string is required"
    }
    assert len(mp.store.requests) == before and payloads[0]["id"] not in mp.store.requests
    assert _import(mp, "\n".join(json.dumps(p) for p in payloads)) == [p["id"] for p in payloads]
    again = mp.admin("POST", "/admin/requests", data=json.dumps(payloads[0]).encode())
    assert again.status_code == 400 and "already exists" in again.json()["error"]
    for body in (b"{not json", b"[1]", b'{"id": "PR-1"}'):
        answer = mp.admin("POST", "/admin/requests", data=body)
        assert answer.status_code == 400 and answer.json()["error"], body


def test_seed_file_and_import_option_take_payloads_and_survive_a_restart(tmp_path: Path) -> None:
    toolkit, php = (fixture_payloads(_fixture(n))[0] for n in (TOOLKIT, PHP_SDK))
    template = json.loads(_fixture(TEMPLATE_FIXTURE).read_text(encoding="utf-8"))
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        yaml.safe_dump(
            {
                "users": [{"id": "UR-111-222-333", "name": "Agent", "email": "agent@v.example"}],
                "connect_requests": [toolkit],
                "connect_templates": {toolkit["asset"]["product"]["id"]: [template]},
            }
        ),
        encoding="utf-8",
    )
    lines = tmp_path / "requests.jsonl"
    lines.write_text(json.dumps(php) + "\n", encoding="utf-8")
    state = tmp_path / "state.sqlite"
    settings = dict(seed_file=seed, import_files=(lines,), state_file=state, clock=MockClock(START))
    first = create_app(MarketplaceSettings(**settings))  # type: ignore[arg-type]
    first.store.close()
    app = create_app(MarketplaceSettings(**settings))  # type: ignore[arg-type]  # restored
    with ServerThread(app) as server:
        mp = Running(app, server)
        for payload in (toolkit, php):
            assert mp.get(f"/requests/{payload['id']}").json() == payload
        product = toolkit["asset"]["product"]["id"]
        assert mp.get(f"/products/{product}/templates/{template['id']}").json() == template
        assert "UR-111-222-333" in mp.store.users
    with sqlite3.connect(state) as db:
        assert db.execute("select count(*) from users").fetchone()[0] >= 2


def test_a_bad_import_file_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "PR-1-001", "type": "cancel"}]', encoding="utf-8")
    with pytest.raises(SeedError, match=r"broken.json\[0\]\.status: None is not one of"):
        create_app(MarketplaceSettings(import_files=(broken,)))


def test_a_template_fixture_is_served_back_unchanged(start: Callable[..., Running]) -> None:
    template = json.loads(_fixture(TEMPLATE_FIXTURE).read_text(encoding="utf-8"))
    mp = start(generate=1)
    product = sorted(mp.store.products)[0]
    added = mp.admin("POST", f"/admin/products/{product}/templates", data=json.dumps(template))
    assert added.status_code == 201, added.text
    assert mp.get(f"/products/{product}/templates/{template['id']}").json() == template
    listed = mp.get(f"/products/{product}/templates?eq(id,{template['id']})")
    assert listed.json() == [template]
    bad = mp.admin("POST", f"/admin/products/{product}/templates", data=b'{"id": "TL-1"}')
    assert (
        bad.status_code == 400
        and bad.json()["error"] == "payload[0].name: a non-empty string is required"
    )


def test_the_example_seed_files_connect_request_is_served_back_unchanged(
    start: Callable[..., Running],
) -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "seed.example.yaml"
    example = yaml.safe_load(path.read_text(encoding="utf-8"))["connect_requests"][0]
    mp = start(seed_file=path)
    assert mp.get(f"/requests/{example['id']}").json() == example
    assert mp.act(example["id"], "assign", {"id": "UR-100-200-300"}).json()["assignee"]["name"] == (
        "Ada Lovelace"
    )


def test_unquoted_yaml_times_are_refused_with_a_hint(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    payload = fixture_payloads(_fixture(TOOLKIT))[0]
    text = yaml.safe_dump({"connect_requests": [payload]}).replace(
        f"'{payload['created']}'", payload["created"]
    )
    seed.write_text(text, encoding="utf-8")
    with pytest.raises(SeedError, match="quote dates and times in YAML"):
        create_app(MarketplaceSettings(seed_file=seed))


def test_the_import_option_reads_paths_from_the_command_line_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from cancel_sandbox.marketplace import cli

    monkeypatch.setenv("MOCK_CONNECT_IMPORT", str(tmp_path / "a.json"))
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    args = parser.parse_args(["--import", str(tmp_path / "b.jsonl")])
    assert cli.settings_from(args).import_files == (
        str(tmp_path / "a.json"),
        str(tmp_path / "b.jsonl"),
    )


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_seed_file_may_be_connect_payloads_alone(tmp_path: Path, suffix: str) -> None:
    payloads = fixture_payloads(
        _fixture(
            "cloudblue__connect-extension-mulesoft__src__test__resources____files__requests.json"
        )
    )
    seed = tmp_path / f"requests{suffix}"
    text = json.dumps(payloads) if suffix == ".json" else "\n".join(map(json.dumps, payloads))
    seed.write_text(text, encoding="utf-8")
    app = create_app(MarketplaceSettings(seed_file=seed, clock=MockClock(START)))
    with ServerThread(app) as server:
        mp = Running(app, server)
        assert [mp.get(f"/requests/{p['id']}").json() for p in payloads] == payloads


def test_the_linked_template_of_an_imported_request_is_added_to_its_product(
    start: Callable[..., Running],
) -> None:
    payload = fixture_payloads(_fixture(PHP_SDK))[0]
    linked = {**copy.deepcopy(payload), "template": {"id": "TL-827-840-476", "name": "Welcome"}}
    mp = start()
    _import(mp, json.dumps(linked))
    assert mp.get(f"/requests/{linked['id']}").json() == linked
    product = linked["asset"]["product"]["id"]
    template = mp.get(f"/products/{product}/templates/TL-827-840-476").json()
    assert template["name"] == "Welcome" and template["body"] == linked["activation_key"]
    assert mp.get(f"/requests/{linked['id']}/render").text == linked["activation_key"]


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("asset", "marketplace"), {"name": "x"}, "payload[0].asset.marketplace.id: a non-empty"),
        (("contract",), "CRD-1", "payload[0].contract: an object is required, got str"),
        (("asset", "connection", "type"), "sandbox", "payload[0].asset.connection.type: "),
        (("asset", "params"), [{"value": "x"}], "payload[0].asset.params[0].id: a non-empty"),
        (("assignee",), "someone", "payload[0].assignee: '' or an object with an id"),
        (("created",), "yesterday", "payload[0].created: 'yesterday' is not an ISO 8601"),
    ],
)
def test_a_payload_the_mock_cannot_understand_is_one_clear_400(
    start: Callable[..., Running], path: tuple[str, ...], value: object, message: str
) -> None:
    payload = copy.deepcopy(fixture_payloads(_fixture(TOOLKIT))[0])
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    mp = start()
    refused = mp.admin("POST", "/admin/requests", data=json.dumps(payload).encode())
    assert refused.status_code == 400 and refused.json()["error"].startswith(message)
    assert payload["id"] not in mp.store.requests


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def test_mutated_payloads_are_imported_or_refused_never_a_server_error(
    start: Callable[..., Running],
) -> None:
    """Bounded: 300 payloads from every request fixture, each with one to three values replaced
    by values of other JSON types; imported ones are served back as given and acted on, and the
    lists and the web page still answer."""
    import random

    bases = [p for name in REQUEST_FIXTURES for p in fixture_payloads(_fixture(name))]
    replacements: list[object] = [None, "", "x", 5, -1.5, True, [], ["x"], {}, {"a": 1}]
    rng = random.Random(18)
    mp = start()
    outcomes: Counter[int] = Counter()
    for number in range(300):
        payload = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(_paths(payload))
            node = payload
            for key in path[:-1]:
                node = node[key]  # type: ignore[index]
            node[path[-1]] = copy.deepcopy(rng.choice(replacements))  # type: ignore[index]
        payload["id"] = f"PR-7000-0000-{number:04d}-001"
        if isinstance(payload.get("asset"), dict):
            payload["asset"]["id"] = f"AS-7000-0000-{number:04d}"
        answer = mp.admin("POST", "/admin/requests", data=json.dumps(payload).encode())
        outcomes[answer.status_code] += 1
        assert answer.status_code in (201, 400), (payload, answer.text)
        if answer.status_code == 201:  # what was imported is served back as given
            assert mp.get(f"/requests/{payload['id']}").json() == payload
            assert mp.act(payload["id"], "fail", {"reason": "r"}).status_code < 500
            assert mp.get(f"/assets/{payload['asset']['id']}").status_code == 200
    for path in ("/requests?limit=1000", "/assets?limit=1000", "/marketplaces", "/conversations"):
        assert mp.get(path).status_code == 200, path
    assert mp.admin("GET", "/").status_code == 200
    assert outcomes[201] > 50 and outcomes[400] > 20, outcomes


def test_nulls_where_the_mock_reads_text_are_served_back_and_shown(
    start: Callable[..., Running],
) -> None:
    payload = copy.deepcopy(fixture_payloads(_fixture(TOOLKIT))[0])
    payload["asset"]["marketplace"]["name"] = None
    payload["asset"]["connection"]["vendor"].pop("name")
    payload["assignee"] = {"id": "UR-1", "name": None, "email": None}
    mp = start()
    _import(mp, json.dumps(payload))
    assert mp.get(f"/requests/{payload['id']}").json() == payload
    assert mp.admin("GET", "/").status_code == 200
    assert mp.get(f"/conversations?instance_id={payload['id']}").json()[0]["accounts"]
