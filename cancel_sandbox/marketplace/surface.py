"""The rest of the client surface a fulfillment processor and its tests touch.

- ``GET /assets/{id}/requests``: the subscription's requests as ``dp.RequestReference`` objects,
  filtered, ordered and paged like ``/requests`` (``Content-Range``, limit/offset checked).
- ``GET /subscriptions/requests[/{id}]``: billing requests. This marketplace bills nothing, so the
  list is an empty page and any id is unknown (404); filters are still checked (400 on typos).
  (``/subscriptions/assets`` is the ``/assets`` handler, see app.py.)
- ``GET /marketplaces[/{id}]``: the marketplaces the store knows.
- ``GET /requests/{id}/render``: the request's linked template (the one it was approved with)
  rendered with its parameter values, as ``text/markdown`` (an imported approved request: its
  activation key); 400 ``REQ_003`` when none is linked.
- ``GET /products/{id}/templates/{template_id}/render?request_id=PR-...`` (or ``asset_id=``):
  the template rendered for that request or subscription, as a JSON string.
- ``POST /conversations``: a conversation about any object (``instance_id``); one per request
  already exists, so a second one for a request is refused. 403 unless the key may create
  conversations (``MarketplaceSettings.may_create_conversations``): a vendor's key cannot.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from cancel_sandbox.marketplace.actions import render_template
from cancel_sandbox.marketplace.errors import ApiError, invalid, missed, not_found, refused
from cancel_sandbox.marketplace.evaluate import run_query
from cancel_sandbox.marketplace.fields import REQUEST_FIELDS
from cancel_sandbox.marketplace.records import (
    Conversation,
    Request,
    render_conversation,
    render_request,
)
from cancel_sandbox.marketplace.responses import json_response, page_of, read_json
from cancel_sandbox.marketplace.rql import Field, Query, parse_query
from cancel_sandbox.marketplace.store import Store

__all__ = ["surface_routes", "MARKETPLACE_FIELDS", "BILLING_REQUEST_FIELDS"]

MARKETPLACE_FIELDS: dict[str, Field] = {
    "id": Field(lambda m: m.get("id")),
    "name": Field(lambda m: m.get("name")),
}
# Billing requests: the filters Connect documents; nothing ever matches (there are none).
BILLING_REQUEST_FIELDS: dict[str, Field] = {
    name: Field(lambda _r: None)
    for name in (
        "id", "type", "asset.id", "asset.product.id", "asset.marketplace.id",
        "asset.connection.type", "asset.tiers.customer.id", "period.from", "period.to",
    )
}  # fmt: skip
_TOPIC_MAX = 255


def _reference(request: Request) -> dict[str, Any]:
    """``dp.RequestReference``: what ``/assets/{id}/requests`` lists."""
    doc = render_request(request)
    out: dict[str, Any] = {
        key: doc[key] for key in ("id", "type", "status", "events") if key in doc
    }
    if request.assignee:
        out["assignee"] = request.assignee
    return out


def _rendered_for(store: Store, body: str, params: HttpRequest) -> str:
    request_id = params.query_params.get("request_id")
    asset_id = params.query_params.get("asset_id")
    if request_id:
        return render_template(body, store.request(request_id))
    if asset_id:
        asset = store.asset(asset_id)
        probe = Request(
            id="", type="purchase", status="approved", asset=asset, created=asset.created,
            updated=asset.updated, conversation_id="",
        )  # fmt: skip
        return render_template(body, probe)
    raise missed("request_id")


def surface_routes(
    store: Store, actor: str, max_body: int, may_create_conversations: bool = False
) -> list[Route]:
    """Routes relative to ``/public/v1``, acting as ``actor`` in the ledger."""

    def query_of(request: HttpRequest, fields: Any) -> Query:
        return parse_query(request.scope.get("query_string", b""), fields=fields)

    async def asset_requests(request: HttpRequest) -> Response:
        query = query_of(request, REQUEST_FIELDS)
        with store.lock:
            asset = store.asset(request.path_params["id"])
            store.tick()
            records = [store.requests[i] for i in asset.request_ids]
            total, page = run_query(records, query, REQUEST_FIELDS, ("created", "id"))
            docs = [_reference(r) for r in page]
        return page_of(total, docs, query)

    async def billing_requests(request: HttpRequest) -> Response:
        query = query_of(request, BILLING_REQUEST_FIELDS)
        return page_of(0, [], query)

    async def billing_request(request: HttpRequest) -> Response:
        raise not_found("Billing request", request.path_params["id"])

    async def marketplaces(request: HttpRequest) -> Response:
        query = query_of(request, MARKETPLACE_FIELDS)
        with store.lock:
            total, page = run_query(
                list(store.marketplaces.values()), query, MARKETPLACE_FIELDS, ("id",)
            )
        return page_of(total, page, query)

    async def marketplace(request: HttpRequest) -> Response:
        with store.lock:
            found = store.marketplaces.get(request.path_params["id"])
        if found is None:
            raise not_found("Marketplace", request.path_params["id"])
        return json_response(found)

    async def request_render(request: HttpRequest) -> Response:
        with store.lock:
            record = store.request(request.path_params["id"])
            linked = (record.template or {}).get("id")
            template = record.asset.product.template(linked) if linked else None
            if template is not None:
                text = render_template(template.get("body") or "", record)
            elif record.activation_key:
                # An imported approved request whose template this mock never saw: the rendered
                # text Connect sent is its activation key.
                text = record.activation_key
            else:
                raise refused(f"Request {record.id} has no linked template to render.")
        return Response(text.encode("utf-8"), media_type="text/markdown")

    async def template_render(request: HttpRequest) -> Response:
        with store.lock:
            product = store.product(request.path_params["id"])
            template = product.template(request.path_params["template_id"])
            if template is None:
                raise not_found("Template", request.path_params["template_id"])
            text = _rendered_for(store, template.get("body") or "", request)
        return json_response(text)

    async def conversation_create(request: HttpRequest) -> Response:
        if not may_create_conversations:
            # Connect: an external caller's key adds messages to a request's conversation; it
            # cannot create conversations (the error code is this mock's: none is documented).
            raise ApiError(403, "AUTH_002", "You do not have permission to perform this action.")
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise invalid("body", "a JSON object is required.")
        instance_id, topic = body.get("instance_id"), body.get("topic", "")
        if not isinstance(instance_id, str) or not instance_id.strip():
            raise missed("instance_id")
        if not isinstance(topic, str) or len(topic) > _TOPIC_MAX:
            raise invalid("topic", f"a string of at most {_TOPIC_MAX} characters is required.")
        with store.change():
            # One conversation per object, as Connect keeps it (requests have theirs already).
            existing = store.conversation_of.get(instance_id) or next(
                (c.id for c in store.conversations.values() if c.instance_id == instance_id), None
            )
            if existing:
                raise invalid(
                    "instance_id", f"{instance_id[:80]} already has conversation {existing}."
                )
            creator = {"id": actor, "name": f"API key {actor}"}
            conversation = Conversation(
                id=store.ids.conversation(),
                instance_id=instance_id,
                topic=topic or f"Conversation about {instance_id}",
                created=store.now(),
                creator=creator,
                accounts=[creator],
            )
            store.add_conversation(conversation)
            store.record(actor, "conversation", conversation.id, "created", detail=instance_id)
        return json_response(render_conversation(conversation), 201)

    return [
        Route("/assets/{id}/requests", asset_requests, methods=["GET"]),
        Route("/subscriptions/requests", billing_requests, methods=["GET"]),
        Route("/subscriptions/requests/{id}", billing_request, methods=["GET"]),
        Route("/marketplaces", marketplaces, methods=["GET"]),
        Route("/marketplaces/{id}", marketplace, methods=["GET"]),
        Route("/requests/{id}/render", request_render, methods=["GET"]),
        Route("/products/{id}/templates/{template_id}/render", template_render, methods=["GET"]),
        Route("/conversations", conversation_create, methods=["POST"]),
    ]
