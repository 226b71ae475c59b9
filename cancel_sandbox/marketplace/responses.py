"""Reading request bodies (size-capped JSON) and answering in Connect's shapes: objects, pages
with ``Content-Range``, errors.

List responses carry ``Content-Range: items <first>-<last>/<total>`` (``items 0-0/0`` when
empty), which connect-openapi-client reads to decide whether to fetch the next page and to answer
``count()``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from cancel_sandbox.marketplace.errors import ApiError, invalid
from cancel_sandbox.marketplace.rql import Query

__all__ = [
    "dumps",
    "json_response",
    "json_text",
    "error_response",
    "page",
    "page_of",
    "read_body",
    "read_json",
]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, headers=headers, media_type="application/json")


def json_text(text: str, status: int = 200) -> Response:
    return Response(text.encode("utf-8"), status_code=status, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status)


def page(total: int, texts: list[str], query: Query) -> Response:
    """A page of already serialised objects."""
    if texts:
        header = f"items {query.offset}-{query.offset + len(texts) - 1}/{total}"
    else:
        header = f"items {query.offset}-{query.offset}/{total}" if total else "items 0-0/0"
    body = ("[" + ",".join(texts) + "]").encode("utf-8")
    return Response(body, media_type="application/json", headers={"Content-Range": header})


def page_of(total: int, docs: list[Any], query: Query) -> Response:
    """A page of JSON-ready objects."""
    return page(total, [dumps(doc).decode("utf-8") for doc in docs], query)


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, refused with a 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, "VAL_001", f"body: the request body exceeds {limit} bytes.")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: HttpRequest, limit: int) -> Any:
    """The JSON body (None when empty); 413 beyond ``limit`` bytes, 400 when not JSON."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid("body", "the request body is not valid JSON.") from None
