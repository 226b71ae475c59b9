"""The ``/public/v1`` routes: what connect-openapi-client and the legacy SDK call.

Handlers are thin: parse, call the store or the status rules, render, answer JSON. Authentication
is a pure ASGI layer in front of the router (:class:`ApiKeyGate`): the ``Authorization`` header
must equal the configured key exactly (connect-openapi-client sends it verbatim, ``ApiKey ``
prefix included); it is compared in constant time and never echoed. The same layer drops a
trailing slash (the legacy SDK posts to ``requests/{id}/approve/``).

Bodies are read with a size cap (413 beyond it) and must be JSON objects, sent as JSON: a body
with another ``Content-Type`` (``text/plain``, a form) is answered 415, as a REST framework does.
List responses carry ``Content-Range: items <first>-<last>/<total>`` (``items 0-0/0`` when
empty), which the client reads to decide whether to fetch the next page and to answer ``count()``.

``select(-field)`` removes fields (nested ones too: ``-asset.params``); a positive ``select(x)``
only asks for fields that Connect hides by default, and this mock hides none, so it changes nothing.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from cancel_sandbox.marketplace import actions
from cancel_sandbox.marketplace.conversations import list_conversations, post_message
from cancel_sandbox.marketplace.errors import ApiError
from cancel_sandbox.marketplace.evaluate import run_query
from cancel_sandbox.marketplace.fields import (
    ASSET_FIELDS,
    ASSET_SELECTABLE,
    CONVERSATION_FIELDS,
    MESSAGE_FIELDS,
    REQUEST_FIELDS,
    REQUEST_SELECTABLE,
    TEMPLATE_FIELDS,
)
from cancel_sandbox.marketplace.objects import iso, parse_time, whole_seconds
from cancel_sandbox.marketplace.records import (
    Asset,
    Request,
    render_asset,
    render_conversation,
    render_product,
    render_request,
)
from cancel_sandbox.marketplace.responses import (
    dumps as _dumps,
)
from cancel_sandbox.marketplace.responses import (
    error_response,
    json_response,
    read_body,
    read_json,
)
from cancel_sandbox.marketplace.responses import (
    json_text as _json_text,
)
from cancel_sandbox.marketplace.responses import (
    page as _page,
)
from cancel_sandbox.marketplace.rql import Query, parse_query
from cancel_sandbox.marketplace.serialize import Serializer
from cancel_sandbox.marketplace.store import Store
from cancel_sandbox.marketplace.surface import surface_routes

__all__ = [
    "API_PREFIX",
    "ApiKeyGate",
    "public_routes",
    "json_response",
    "read_body",
    "read_json",
    "error_response",
]

API_PREFIX = "/public/v1"
_UNAUTHORIZED = json.dumps(
    {"error_code": "AUTH_001", "errors": ["API request is unauthorized."]}
).encode()
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ApiKeyGate:
    """Pure ASGI: 401 for ``/public/v1`` calls without the configured key; trailing slashes off."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = {**scope, "path": path.rstrip("/") or "/"}
                path = scope["path"]
            if path.startswith(API_PREFIX) and not self._authorized(scope):
                await _answer(send, 401, _UNAUTHORIZED)
                return
            if path.startswith(API_PREFIX) and (media := _unsupported_media(scope)) is not None:
                body = json.dumps(
                    {
                        "error_code": "REQ_003",
                        "errors": [f'Unsupported media type "{media[:100]}" in request.'],
                    }
                ).encode()
                await _answer(send, 415, body)
                return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                # RFC 9110 section 5.5: a field value excludes the whitespace around it, and
                # servers differ on whether they strip it before the application sees it (uvicorn
                # does since 0.55). Stripping here makes the rule ours, whatever serves us.
                return hmac.compare_digest(value.strip(b" \t"), self._key)
        return False


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _unsupported_media(scope: Scope) -> str | None:
    """The media type of a request body the API would not parse, else None. As a REST framework
    (Connect's API is one) answers: a body is parsed only as JSON; one sent as ``text/plain`` or a
    form is refused with 415, not read as JSON anyway. A request without a body (no
    ``Content-Length``, or 0) or without a ``Content-Type`` passes (the framework reads no body)."""
    headers: dict[bytes, bytes] = {name.lower(): value for name, value in scope["headers"]}
    length = headers.get(b"content-length", b"").strip()
    chunked = b"transfer-encoding" in headers
    if (length in (b"", b"0") and not chunked) or b"content-type" not in headers:
        return None
    media: str = headers[b"content-type"].decode("latin-1").split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    return media


def _drop(doc: dict[str, Any], path: str) -> None:
    """Remove a (dotted) field, copying the dicts on the way: nested parts may be shared."""
    *parents, last = path.split(".")
    node = doc
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            return
        node[name] = node = dict(child)
    node.pop(last, None)


def _whole_second_created(text: str) -> str:
    """A request's JSON with ``created`` (and ``events.created.at``) cut to whole seconds."""
    return _dumps(_whole_second_doc(json.loads(text))).decode("utf-8")


def _whole_second_doc(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)  # parts of a rendered request may be shared with the store: copy what changes
    events = doc.get("events")
    created = events.get("created") if isinstance(events, dict) else None
    if isinstance(created, dict):
        doc["events"] = {**events, "created": dict(created)}  # type: ignore[dict-item]
        created = doc["events"]["created"]
    for holder, key in ((doc, "created"), (created, "at")):
        if isinstance(holder, dict):
            moment = parse_time(holder.get(key))
            if moment is not None:
                holder[key] = iso(whole_seconds(moment))
    return doc


def _dropped(query: Query) -> list[str]:
    return [name[1:] for name in query.select if name.startswith("-")]


def _texts(
    records: list[Any],
    query: Query,
    fast: Callable[[Any, list[str]], str],
    render: Callable[[Any], dict[str, Any]],
) -> list[str]:
    """JSON texts of a page: spliced from cached fragments, unless a nested field is dropped."""
    dropped = _dropped(query)
    if not any("." in path for path in dropped):
        return [fast(record, dropped) for record in records]
    texts = []
    for record in records:
        doc = render(record)
        for path in dropped:
            _drop(doc, path)
        texts.append(_dumps(doc).decode("utf-8"))
    return texts


def public_routes(
    store: Store, actor: str, max_body: int, *, may_create_conversations: bool = False
) -> list[Route]:
    """The API routes (relative to ``/public/v1``), acting as ``actor`` in the ledger; the key
    creates conversations only when ``may_create_conversations`` (else 403, as on Connect)."""

    serializer = Serializer()

    def request_text(record: Request, dropped: list[str] = []) -> str:  # noqa: B006 - read only
        text = serializer.request(record, dropped)
        if store.created_precision == "serve_seconds":
            text = _whole_second_created(text)  # the fault: stores fractions, serves seconds
        return text

    def request_doc(record: Request) -> dict[str, Any]:
        doc = render_request(record)
        if store.created_precision == "serve_seconds":
            doc = _whole_second_doc(doc)
        return doc

    def asset_text(record: Asset, dropped: list[str] = []) -> str:  # noqa: B006 - read only
        text = serializer.asset(record)
        if dropped:  # top-level drops on a subscription: rare, so through the dict
            doc = render_asset(record)
            for path in dropped:
                doc.pop(path, None)
            text = _dumps(doc).decode("utf-8")
        return text

    def query_of(request: HttpRequest, fields: Any, selectable: Iterable[str] = ()) -> Query:
        return parse_query(
            request.scope.get("query_string", b""), fields=fields, selectable=selectable
        )

    async def list_requests(request: HttpRequest) -> Response:
        query = query_of(request, REQUEST_FIELDS, REQUEST_SELECTABLE)
        with store.lock:
            total, page = store.list_requests(query)
            texts = _texts(page, query, request_text, request_doc)
        return _page(total, texts, query)

    async def create_request(request: HttpRequest) -> Response:
        body = await read_json(request, max_body)
        created = actions.create_cancel(store, body, actor)
        with store.lock:
            return _json_text(request_text(created), 201)

    async def get_request(request: HttpRequest) -> Response:
        with store.lock:
            return _json_text(request_text(store.request(request.path_params["id"])))

    async def put_request(request: HttpRequest) -> Response:
        body = await read_json(request, max_body)
        updated = actions.update_request(store, request.path_params["id"], body, actor)
        with store.lock:
            return _json_text(request_text(updated))

    async def request_action(request: HttpRequest) -> Response:
        body = await read_json(request, max_body)
        done = actions.perform(
            store, request.path_params["id"], request.path_params["action"], body, actor
        )
        with store.lock:
            return _json_text(request_text(done))

    async def list_assets(request: HttpRequest) -> Response:
        query = query_of(request, ASSET_FIELDS, ASSET_SELECTABLE)
        with store.lock:
            total, page = run_query(store.assets.values(), query, ASSET_FIELDS, ("created", "id"))
            texts = _texts(page, query, asset_text, render_asset)
        return _page(total, texts, query)

    async def get_asset(request: HttpRequest) -> Response:
        with store.lock:
            return _json_text(asset_text(store.asset(request.path_params["id"])))

    async def conversations_list(request: HttpRequest) -> Response:
        query = query_of(request, CONVERSATION_FIELDS)
        total, page = list_conversations(store, query)
        return _page(total, [_dumps(render_conversation(c)).decode("utf-8") for c in page], query)

    async def get_conversation(request: HttpRequest) -> Response:
        with store.lock:
            return json_response(render_conversation(store.conversation(request.path_params["id"])))

    async def list_messages(request: HttpRequest) -> Response:
        query = query_of(request, MESSAGE_FIELDS)
        with store.lock:
            conversation = store.conversation(request.path_params["id"])
            total, page = run_query(list(conversation.messages), query, MESSAGE_FIELDS)
        return _page(total, [_dumps(m).decode("utf-8") for m in page], query)

    async def message_create(request: HttpRequest) -> Response:
        body = await read_json(request, max_body)
        return json_response(post_message(store, request.path_params["id"], body, actor), 201)

    async def get_product(request: HttpRequest) -> Response:
        with store.lock:
            return json_response(render_product(store.product(request.path_params["id"])))

    async def list_templates(request: HttpRequest) -> Response:
        query = query_of(request, TEMPLATE_FIELDS)
        with store.lock:
            total, page = run_query(
                store.product(request.path_params["id"]).templates, query, TEMPLATE_FIELDS
            )
        return _page(total, [serializer.fragment(t) for t in page], query)

    async def get_template(request: HttpRequest) -> Response:
        with store.lock:
            product = store.product(request.path_params["id"])
            template = product.template(request.path_params["template_id"])
        if template is None:
            raise ApiError(
                404, "REQ_001", f"Template {request.path_params['template_id']} not found."
            )
        return json_response(template)

    return by_path([
        Route("/requests", list_requests, methods=["GET"]),
        Route("/requests", create_request, methods=["POST"]),
        Route("/requests/{id}", get_request, methods=["GET"]),
        Route("/requests/{id}", put_request, methods=["PUT"]),
        Route("/requests/{id}/{action}", request_action, methods=["POST"]),
        Route("/assets", list_assets, methods=["GET"]),
        Route("/assets/{id}", get_asset, methods=["GET"]),
        # connect-openapi-client's ``subscriptions`` namespace lists the same subscriptions.
        Route("/subscriptions/assets", list_assets, methods=["GET"]),
        Route("/subscriptions/assets/{id}", get_asset, methods=["GET"]),
        *surface_routes(store, actor, max_body, may_create_conversations),
        Route("/conversations", conversations_list, methods=["GET"]),
        Route("/conversations/{id}", get_conversation, methods=["GET"]),
        Route("/conversations/{id}/messages", list_messages, methods=["GET"]),
        Route("/conversations/{id}/messages", message_create, methods=["POST"]),
        Route("/products/{id}", get_product, methods=["GET"]),
        Route("/products/{id}/templates", list_templates, methods=["GET"]),
        Route("/products/{id}/templates/{template_id}", get_template, methods=["GET"]),
    ])  # fmt: skip


def by_path(routes: list[Route]) -> list[Route]:
    """One route per path, dispatching on the method, so that a 405's ``Allow`` names every
    method of the path (Starlette reports only those of the first route whose path matches)."""
    grouped: dict[str, list[Route]] = {}
    for route in routes:
        grouped.setdefault(route.path, []).append(route)
    merged = []
    for path, group in grouped.items():
        if len(group) == 1:
            merged.append(group[0])
            continue
        handlers = {
            method: route.endpoint
            for route in group
            for method in (route.methods or ())
            if method != "HEAD"
        }

        async def dispatch(request: HttpRequest, handlers: dict[str, Any] = handlers) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)  # type: ignore[no-any-return]

        merged.append(Route(path, dispatch, methods=sorted(handlers)))
    return merged
