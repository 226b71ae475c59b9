"""Connect's request workflow: which action is allowed from which status, and what it does.

From cloudblue/connect-workflows and the API documentation:

==========  ====================  ==========  ================================================
action      allowed from          to          effect on the subscription (for a cancel)
==========  ====================  ==========  ================================================
approve     pending               approved    terminated (purchase/change/resume: active,
                                              suspend: suspended); needs template_id or
                                              activation_tile; activation_key = rendered body
fail        pending               failed      back to active (purchase: terminated); needs reason
inquire     pending               inquiring   none
pend        inquiring             pending     none
schedule    pending               scheduled   none; needs planned_date in the future; falls
                                              back to pending when the clock passes it
revoke      scheduled             revoking    none
confirm     revoking              revoked     back to active
assign      any open status       (same)      sets assignee ({"id": "UR-..."} or {"email": ...})
unassign    any open status       (same)      clears assignee
==========  ====================  ==========  ================================================

A refused transition is a 400 ``REQ_003``; a missing required field a 400 ``REQ_005``
(``Missed fields: reason.``) — checked in that order, so approving twice is always ``REQ_003``.
``PUT /requests/{id}`` (parameter values, note) is allowed in pending, inquiring and draft.
Creating requests: only ``cancel`` (of an active subscription, which becomes ``terminating``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cancel_sandbox.marketplace.errors import ApiError, invalid, missed, refused
from cancel_sandbox.marketplace.objects import iso, parse_time, user_object
from cancel_sandbox.marketplace.objects import request_id as new_request_id
from cancel_sandbox.marketplace.params import param_values
from cancel_sandbox.marketplace.records import OPEN_STATUSES, Request
from cancel_sandbox.marketplace.store import Store

__all__ = ["ACTIONS", "perform", "create_cancel", "update_request", "render_template"]

EDITABLE = ("pending", "inquiring", "draft")
_PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# What the subscription becomes when a request of each type is approved / failed.
_ON_APPROVE = {
    "cancel": "terminated",
    "purchase": "active",
    "change": "active",
    "suspend": "suspended",
    "resume": "active",
}
_ON_FAIL = {
    "cancel": "active",
    "purchase": "terminated",
    "change": "active",
    "suspend": "active",
    "resume": "suspended",
}


def _body(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise invalid("body", "a JSON object is required.")
    return body


def _require_status(
    request: Request, action: str, allowed: tuple[str, ...] | frozenset[str]
) -> None:
    if request.status not in allowed:
        raise refused(f"Action {action} is not allowed for a request in status {request.status}.")


def render_template(body: str, request: Request) -> str:
    """Fill ``{{ parameter_id }}`` (and ``request_id``, ``asset_id``, ``customer``) placeholders;
    unknown placeholders render empty, as Connect's renderer does."""
    extra = {
        "request_id": request.id,
        "asset_id": request.asset.id,
        "customer": (request.asset.tiers.get("customer") or {}).get("name", ""),
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return extra[name] if name in extra else request.param(name)

    return _PLACEHOLDER.sub(fill, body)


def _template(request: Request, template_id: Any, kinds: tuple[str | None, ...]) -> dict[str, Any]:
    if not isinstance(template_id, str) or not template_id:
        raise invalid("template_id", "a template id is required.")
    template = request.asset.product.template(template_id)
    if template is None or template.get("scope") != "asset" or template.get("type") not in kinds:
        raise invalid(
            "template_id",
            f"{template_id} is not an asset template of type "
            f"{'/'.join(str(k) for k in kinds)} of product {request.asset.product.id}.",
        )
    return template


def _approve(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "approve", ("pending",))
    template = None
    if body.get("template_id"):
        template = _template(request, body["template_id"], ("fulfillment",))
    elif not (isinstance(body.get("activation_tile"), str) and body["activation_tile"]):
        raise missed("template_id")
    effective = body.get("effective_date")
    effective_date = parse_time(effective) if effective else store.now()
    if effective_date is None:
        raise invalid("effective_date", f"{effective!r} is not a valid ISO 8601 date and time.")
    # Validated: from here on the request changes.
    if template is not None:
        request.activation_key = render_template(template.get("body") or "", request)
        request.template = {"id": template["id"], "name": template["name"]}
    else:
        request.activation_key = body["activation_tile"]
    request.effective_date = effective_date
    asset = request.asset
    for definition in asset.product.params:
        # What the vendor filled in on the request becomes the subscription's value.
        if definition.get("phase") == "fulfillment" and definition["id"] in request.params:
            asset.params[definition["id"]] = request.params[definition["id"]]
    store.set_request_status(request, "approved", actor, detail=(request.template or {}).get("id"))
    store.set_asset_status(
        asset, _ON_APPROVE.get(request.type, asset.status), actor, detail=request.id
    )
    store.touch_asset(asset)


def _fail(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "fail", ("pending",))
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise missed("reason")
    request.reason = reason
    store.set_request_status(request, "failed", actor, detail=reason[:200])
    store.set_asset_status(
        request.asset, _ON_FAIL.get(request.type, request.asset.status), actor, detail=request.id
    )


def _inquire(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "inquire", ("pending",))
    if body.get("template_id"):
        _template(request, body["template_id"], ("inquire", "fulfillment", None))
    request.answered = False
    store.set_request_status(request, "inquiring", actor)


def _pend(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "pend", ("inquiring",))
    store.set_request_status(request, "pending", actor)


def _schedule(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "schedule", ("pending",))
    raw = body.get("planned_date")
    if not raw:
        raise missed("planned_date")
    planned = parse_time(raw)
    if planned is None:
        raise invalid("planned_date", f"{raw!r} is not a valid ISO 8601 date and time.")
    if planned <= store.now():
        raise invalid("planned_date", "the planned date must be in the future.")
    request.planned_date = planned
    store.set_request_status(request, "scheduled", actor, detail=iso(planned))


def _revoke(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "revoke", ("scheduled",))
    if isinstance(body.get("reason"), str):
        request.reason = body["reason"]
    store.set_request_status(request, "revoking", actor)


def _confirm(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "confirm", ("revoking",))
    store.set_request_status(request, "revoked", actor)
    if request.type == "cancel":
        store.set_asset_status(request.asset, "active", actor, detail=request.id)


def _assign(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "assign", OPEN_STATUSES)
    user_id, email = body.get("id"), body.get("email")
    if user_id is not None:
        # Connect assigns only its own users: an id must name one (users come with the seed).
        if not isinstance(user_id, str) or store.user(user_id) is None:
            raise invalid("id", f"{str(user_id)[:80]!r} is not a known user id.")
        assignee = dict(store.users[user_id])
    elif isinstance(email, str) and _EMAIL.fullmatch(email):
        known = next((u for u in store.users.values() if u.get("email") == email), None)
        assignee = dict(known) if known else user_object(email=email)
        if known is None:
            store.add_user(dict(assignee))  # so that the same person can be named by id later
    else:
        raise invalid("id", "a user id (UR-...) or an email address is required.")
    before = (request.assignee or {}).get("id")
    request.assignee = assignee
    store.touch(request, actor, "assigned", before=before, after=assignee["id"])


def _unassign(store: Store, request: Request, body: dict[str, Any], actor: str) -> None:
    _require_status(request, "unassign", OPEN_STATUSES)
    before = (request.assignee or {}).get("id")
    request.assignee = None
    store.touch(request, actor, "assigned", before=before, after=None)


ACTIONS: dict[str, Callable[[Store, Request, dict[str, Any], str], None]] = {
    "approve": _approve,
    "fail": _fail,
    "inquire": _inquire,
    "pend": _pend,
    "schedule": _schedule,
    "revoke": _revoke,
    "confirm": _confirm,
    "assign": _assign,
    "unassign": _unassign,
}


def perform(store: Store, request_id: str, action: str, body: Any, actor: str) -> Request:
    """Run one action on a request; raises :class:`ApiError` when Connect would refuse it."""
    handler = ACTIONS.get(action)
    if handler is None:
        raise ApiError(404, "REQ_001", f"Unknown request action {action!r}.")
    payload = _body(body)
    with store.change():
        request = store.request(request_id)
        handler(store, request, payload, actor)
        return request


def update_request(store: Store, request_id: str, body: Any, actor: str) -> Request:
    payload = _body(body)
    asset_part = payload.get("asset")
    if asset_part is not None and not isinstance(asset_part, dict):
        raise invalid("asset", "an object is required.")
    note = payload.get("note")
    if note is not None and not isinstance(note, str):
        raise invalid("note", "a string is required.")
    with store.change():
        request = store.request(request_id)
        _require_status(request, "update", EDITABLE)
        values, errors = param_values(
            request.asset.product.params, (asset_part or {}).get("params", []), phases=None
        )
        request.params.update(values)
        request.param_errors.update(errors)
        if note is not None:
            request.note = note
        changed = sorted(set(values) | set(errors)) + (["note"] if note is not None else [])
        store.touch(request, actor, "updated", detail=",".join(changed) or None)
        return request


def create_cancel(store: Store, body: Any, actor: str) -> Request:
    """``POST /requests`` with ``{"type": "cancel", "asset": {"id": ...}}`` (and optionally the
    ordering-phase ``asset.params`` a customer fills in when cancelling)."""
    payload = _body(body)
    if payload.get("type") != "cancel":
        raise invalid("type", "only cancel requests can be created on this marketplace.")
    asset_ref = payload.get("asset")
    if not isinstance(asset_ref, dict) or not isinstance(asset_ref.get("id"), str):
        raise missed("asset.id")
    with store.change():
        asset = store.assets.get(asset_ref["id"])
        if asset is None:
            raise invalid("asset.id", f"subscription {asset_ref['id']} does not exist.")
        if asset.status != "active":
            raise invalid(
                "asset",
                f"only active subscriptions can be cancelled; {asset.id} is {asset.status}.",
            )
        # Any parameter the product declares may be given (testing tools copy a whole subscription's
        # parameters, fulfillment ones included); values are checked as on PUT.
        values, _errors = param_values(
            asset.product.params, asset_ref.get("params", []), phases=None
        )
        numbers = [int(rid.rsplit("-", 1)[1]) for rid in asset.request_ids]
        previous = [rid for rid in asset.request_ids if store.requests[rid].status == "approved"]
        now = store.now()
        request = Request(
            id=new_request_id(asset.id, max(numbers, default=1) + 1),
            type="cancel",
            status="pending",
            asset=asset,
            created=now,
            updated=now,
            conversation_id="",
            params=values,
            previous_approved=previous[-1] if previous else None,
        )
        store.add_request(request)
        store.record(actor, "request", request.id, "created", after="pending", detail=asset.id)
        store.set_asset_status(asset, "terminating", actor, detail=request.id)
        return request
