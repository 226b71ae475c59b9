"""The mock marketplace is no kinder than Connect: ``created`` is filtered and ordered at the
precision it is served (with a fault for servers where the two differ), a JSON body sent as
``text/plain`` is refused with 415 and not acted on, and a vendor's key cannot create a
conversation (403, Connect's error shape)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ..mock_support import START, Running, clock, start, template_of  # noqa: F401 - fixtures

PENDING = "and(eq(type,cancel),eq(status,pending))&ordering(created,id)&limit=100"


@pytest.fixture
def mp(start: Callable[..., Running]) -> Running:
    return start(generate=6, seed=5)


def _crowd(mp: Running) -> list[str]:
    """Every pending cancel moved into one second, fractions falling as the ids rise."""
    store = mp.store
    ids = sorted(r.id for r in mp.pending())
    with store.change():
        for n, request_id in enumerate(ids):
            request = store.requests[request_id]
            store.index.remove(request)
            request.created = START + timedelta(microseconds=100_000 * (len(ids) - n) + 5)
            store.index.add(request)
    return ids


def _listed(mp: Running, extra: str = "") -> list[dict[str, Any]]:
    response = mp.get(f"/requests?{PENDING}{extra}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _faults(mp: Running, **settings: Any) -> Any:
    return mp.admin("PUT", "/admin/faults", json=settings)


def test_created_is_filtered_and_ordered_at_the_precision_served(mp: Running) -> None:
    ids = _crowd(mp)
    rows = _listed(mp)
    served = [r["created"] for r in rows]
    assert served == sorted(served) and all("." in s for s in served)
    assert [r["id"] for r in rows] == list(reversed(ids))  # by the fractions, not by the ids
    middle = rows[2]["created"].replace("+00:00", "Z")
    after = _listed(mp, f"&ge(created,{middle})")
    assert [r["id"] for r in after] == [r["id"] for r in rows[2:]]


def test_compare_seconds_serves_fractions_but_filters_and_orders_whole_seconds(
    mp: Running,
) -> None:
    ids = _crowd(mp)
    assert _faults(mp, created_precision="compare_seconds").status_code == 200
    rows = _listed(mp)
    assert [r["id"] for r in rows] == ids  # within the second: by id
    assert all("." in r["created"] for r in rows)  # still served with fractions
    cursor = rows[0]["created"].replace("+00:00", "Z")  # the latest fraction of the second
    # the row the cursor came from, and the others of its second, compare before it: gone
    assert _listed(mp, f"&ge(created,{cursor})") == []
    whole = START.isoformat().replace("+00:00", "Z")
    assert len(_listed(mp, f"&ge(created,{whole})")) == len(ids)


def test_serve_seconds_serves_whole_seconds_but_filters_the_fractions(mp: Running) -> None:
    ids = _crowd(mp)
    assert _faults(mp, created_precision="serve_seconds").status_code == 200
    rows = _listed(mp)
    assert [r["id"] for r in rows] == list(reversed(ids))
    assert {r["created"] for r in rows} == {START.isoformat()}
    assert {r["events"]["created"]["at"] for r in rows} == {START.isoformat()}
    single = mp.get(f"/requests/{ids[0]}").json()
    assert single["created"] == START.isoformat()
    half = (START + timedelta(microseconds=350_000)).isoformat().replace("+00:00", "Z")
    assert len(_listed(mp, f"&ge(created,{half})")) == 3  # the fractions decide


def test_a_bad_precision_is_refused_and_changes_nothing(mp: Running) -> None:
    refused = _faults(mp, created_precision="hours")
    assert refused.status_code == 400 and "created_precision" in refused.text
    assert mp.admin("GET", "/admin/faults").json()["created_precision"] == "exact"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8"]
)
def test_a_json_body_sent_as_another_media_type_is_415_and_not_acted_on(
    mp: Running, content_type: str
) -> None:
    request = next(mp.pending())
    before = len(mp.ledger())
    body = json.dumps({"template_id": template_of(request)})
    answer = mp.http.post(
        f"{mp.api}/requests/{request.id}/approve",
        data=body,
        headers={"Content-Type": content_type},
        timeout=10,
    )
    assert answer.status_code == 415, answer.text
    error = answer.json()
    assert (
        set(error) == {"error_code", "errors"} and content_type.split(";")[0] in error["errors"][0]
    )
    assert mp.store.requests[request.id].status == "pending"
    assert len(mp.ledger()) == before
    sent_as_json = mp.http.post(
        f"{mp.api}/requests/{request.id}/approve",
        data=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert sent_as_json.status_code == 200 and sent_as_json.json()["status"] == "approved"


def test_a_415_needs_the_key_first(mp: Running) -> None:
    answer = mp.http.post(
        f"{mp.api}/requests",
        data="{}",
        headers={"Content-Type": "text/plain", "Authorization": "ApiKey SU-1:wrong"},
        timeout=10,
    )
    assert answer.status_code == 401


def test_a_vendors_key_cannot_create_a_conversation(
    mp: Running, start: Callable[..., Running]
) -> None:
    conversations = len(mp.store.conversations)
    body = {"instance_id": "TA-1234-5678-9012", "topic": "Tier account"}
    refused = mp.call("POST", "/conversations", body)
    assert refused.status_code == 403, refused.text
    assert set(refused.json()) == {"error_code", "errors"}
    assert len(mp.store.conversations) == conversations
    request = next(mp.pending())  # adding a message to a request's conversation is allowed
    conversation = mp.store.conversation_of[request.id]
    posted = mp.call("POST", f"/conversations/{conversation}/messages", {"text": "hello"})
    assert posted.status_code == 201, posted.text
    allowed = start(generate=1, may_create_conversations=True)
    assert allowed.call("POST", "/conversations", body).status_code == 201


def test_serve_seconds_holds_for_a_nested_select_too(mp: Running) -> None:
    _crowd(mp)
    assert _faults(mp, created_precision="serve_seconds").status_code == 200
    rows = _listed(mp, "&select(-asset.params)")
    assert {r["created"] for r in rows} == {START.isoformat()}
    assert _faults(mp, created_precision="exact").status_code == 200
    assert all("." in r["created"] for r in _listed(mp, "&select(-asset.params)"))
