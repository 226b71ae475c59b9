"""Schemathesis fuzzes the running mock with Connect's document (+ additions, + the overlay).

Every operation of the spec subset is called with generated parameters and bodies (bounded:
a fixed number of examples per operation, a fixed seed, derandomized), and each response is
checked for ``not_a_server_error`` (no 5xx), ``status_code_conformance`` (a documented status),
``content_type_conformance`` and ``response_schema_conformance`` (the body matches the document).
Path parameters draw from the id of a real object of the mock (a pending request, its
subscription, conversation and product) and a missing one, so the fuzzer reaches successes as well
as 404s. The
document's own known errors are patched in ``tests/contract/overlay.py`` (a comment per patch);
no check is relaxed. The counts are printed (``pytest -s`` shows them).

Pins (setup.cfg test extras): schemathesis 3.x, because 4.x needs rich>=13, which
connect-openapi-client's markdown renderer excludes; hypothesis below 6.156, because later ones
removed what hypothesis-jsonschema (schemathesis' generator) calls (``many.more``).
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from cancel_sandbox.marketplace import MarketplaceSettings, MockClock, approve_template, create_app
from processor.ops.serving import ServerThread

from ..conftest import need_or_skip
from ..contract.overlay import load_document, patched
from ..mock_support import START

try:
    import schemathesis
except ImportError:  # in the test extras; CI must have it (need_or_skip fails there)
    schemathesis = None

pytestmark = [pytest.mark.contract, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 12
SEED = 20250301
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


# Operations of the subset that the mock does not serve (a processor never edits a product's
# templates or deletes a conversation); test_not_served_operations_answer_405 pins their answer.
NOT_SERVED = [
    ("/products/{product_product_id}/templates", "post"),
    ("/products/{product_product_id}/templates/{id}", "put"),
    ("/products/{product_product_id}/templates/{id}", "delete"),
    ("/conversations/{id}", "delete"),
]
MISSING = {
    "request": "PR-0000-0000-0000-001",
    "asset": "AS-0000-0000-0000",
    "conversation": "CO-000-000-000",
    "product": "PRD-000-000-000",
    "template": "TL-000-000-000",
    "marketplace": "MP-00000",
}


def _with_ids(document: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Each path parameter draws from a real object's id and a missing one (by what the path
    names), so that the fuzzer reaches successes as well as 404s."""
    out = copy.deepcopy(document)
    for path, operations in out["paths"].items():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "path":
                    continue
                name = parameter["name"]
                if name in ("product_product_id",) or (
                    name == "id" and path.startswith("/products/{id}")
                ):
                    kind = "product"
                elif name == "id" and "/templates/" in path:
                    kind = "template"
                elif name in ("asset_id",) or path.startswith(
                    ("/assets/", "/subscriptions/assets/")
                ):
                    kind = "asset"
                elif name == "conversation_id" or path.startswith("/conversations/"):
                    kind = "conversation"
                elif path.startswith("/marketplaces/"):
                    kind = "marketplace"
                else:
                    kind = "request"
                # Inputs, not checks: the real object, or one that does not exist.
                parameter["schema"] = {"type": "string", "enum": [ids[kind], MISSING[kind]]}
    return out


def test_schemathesis_finds_no_server_error_and_no_nonconformance(shared_reference: Path) -> None:
    if schemathesis is None:
        need_or_skip("schemathesis is not installed (pip install -e '.[test]')")
    from schemathesis import checks as st_checks
    from schemathesis.runner import events, from_schema

    app = create_app(
        MarketplaceSettings(
            generate=40, seed=31, clock=MockClock(START), may_create_conversations=True
        )
    )
    store = app.store
    request = sorted(
        (r for r in store.requests.values() if r.type == "cancel" and r.status == "pending"),
        key=lambda r: r.id,
    )[0]
    product = request.asset.product
    ids = {
        "request": request.id,
        "asset": request.asset.id,
        "conversation": store.conversation_of[request.id],
        "product": product.id,
        "template": approve_template(product),
        "marketplace": sorted(store.marketplaces)[0],
    }
    document = load_document(shared_reference)
    for path in [p for p in document["paths"] if p.startswith("/devops")]:
        del document["paths"][path]  # EaaS event definitions: not part of the marketplace
    for path, method in NOT_SERVED:
        del document["paths"][path][method]
    with ServerThread(app) as server:
        raw = _with_ids(patched(document, server.url), ids)
        schema = schemathesis.from_dict(raw, base_url=server.url + "/public/v1")
        checks = [getattr(st_checks, name) for name in CHECK_NAMES]
        settings = hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            # The explicit phase is off: hypothesis-jsonschema cannot build the document's own
            # body examples (AttributeError inside it), which would test the tool, not the mock.
            phases=[hypothesis.Phase.generate],
        )
        runner = from_schema(
            schema,
            checks=checks,
            hypothesis_settings=settings,
            seed=SEED,
            headers={"Authorization": app.config.api_key},
            request_timeout=10_000,
            store_interactions=True,  # to count statuses
        )
        outcomes: Counter[tuple[str, str]] = Counter()
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        operations = errors = 0
        for event in runner.execute():
            if isinstance(event, events.AfterExecution):
                operations += 1
                for check in event.result.checks:
                    outcomes[(check.name, check.value.name)] += 1
                    if check.value.name == "failure" and len(failures) < 20:
                        response = check.response
                        failures.append(
                            f"{event.result.method} {event.result.path} {check.name}: "
                            f"{(check.message or '')[:300]} "
                            f"[{response.status_code if response else '-'}]"
                        )
                for interaction in event.result.interactions:
                    statuses[interaction.response.status_code] += 1
                errors += len(event.result.errors)
                for error in event.result.errors[:3]:
                    failures.append(
                        f"{event.result.method} {event.result.path} error: {error.exception[:300]}"
                    )
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    print(
        f"\nschemathesis: {operations} operations, {sum(statuses.values())} calls, "
        f"statuses {dict(sorted(statuses.items()))}, server errors {server_errors}, "
        f"errors {errors}"
    )
    for name in CHECK_NAMES:
        print(
            f"  {name}: {outcomes[(name, 'success')]} passed, {outcomes[(name, 'failure')]} failed"
        )
    assert operations >= 30 and sum(statuses.values()) >= operations * 3
    assert 200 in statuses and 404 in statuses and 400 in statuses  # successes and refusals
    assert server_errors == 0 and errors == 0, failures
    assert not any(result == "failure" for (_name, result) in outcomes), "\n".join(failures)


def test_not_served_operations_answer_405_in_connect_shape() -> None:
    import requests

    app = create_app(
        MarketplaceSettings(
            generate=2, seed=31, clock=MockClock(START), may_create_conversations=True
        )
    )
    product = sorted(app.store.products)[0]
    conversation = sorted(app.store.conversations)[0]
    with ServerThread(app) as server:
        for path, method in NOT_SERVED:
            url = (
                server.url
                + "/public/v1"
                + path.replace("{product_product_id}", product).replace(
                    "{id}", conversation if path.startswith("/conversations") else "TL-000-000-000"
                )
            )
            response = requests.request(
                method, url, json={}, headers={"Authorization": app.config.api_key}, timeout=10
            )
            assert response.status_code == 405, (method, path)
            assert response.json()["error_code"] == "REQ_002" and response.headers["allow"]
