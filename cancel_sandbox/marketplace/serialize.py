"""Fast JSON for requests and subscriptions: cached fragments for the shared parts.

Most of a request's JSON is shared with thousands of others (accounts with contact details,
parameter definitions with their choices, connection, product, marketplace). :class:`Serializer`
serialises each shared object once and splices the cached text around the few values that are the
request's own, which makes a 100-request page several times cheaper than ``json.dumps`` of
:func:`records.render_request` — and an approve response too.

Invariant this relies on: shared objects are never mutated after creation (the store replaces,
never edits, them; ``select(-a.b)`` copies before it deletes). The output equals
``json.dumps(render_request(r))`` parsed back; a test checks that over generated data. The cache
keeps a reference to each object it serialised, so ids cannot be reused while cached.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring
from typing import Any

from cancel_sandbox.marketplace.objects import iso
from cancel_sandbox.marketplace.records import Asset, Request, render_asset, render_request

__all__ = ["Serializer"]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _s(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _events(created: str, updated: str) -> str:
    return f'{{"created":{{"at":{created}}},"updated":{{"at":{updated}}}}}'


class Serializer:
    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, str]] = {}

    def fragment(self, obj: Any) -> str:
        """The JSON text of a shared object, serialised once."""
        cached = self._cache.get(id(obj))
        if cached is None or cached[0] is not obj:
            cached = (obj, _dumps(obj))
            self._cache[id(obj)] = cached
        return cached[1]

    def _open(self, obj: dict[str, Any]) -> str:
        """A shared object's JSON without its closing brace, to append fields to."""
        text = self.fragment(obj)
        return text[:-1] + "," if len(text) > 2 else "{"

    def _item_open(self, definition: dict[str, Any] | None, mpn: str) -> str:
        if definition is None:  # an item the product no longer lists: not shared, not cached
            return f'{{"id":{_s(mpn)},"mpn":{_s(mpn)},'
        return self._open(definition)

    def _tiers(self, tiers: dict[str, Any]) -> str:
        return (
            "{"
            + ",".join(
                f"{_s(name)}:{self.fragment(account) if account else '{}'}"
                for name, account in tiers.items()
            )
            + "}"
        )

    def asset(self, asset: Asset, request: Request | None = None) -> str:
        if request is None and asset.raw is not None:  # imported: Connect's own object
            return _dumps(render_asset(asset))
        product = asset.product
        if request is None:
            own, fallback, errors = asset.params, {}, {}
        else:
            own, fallback, errors = request.params, asset.params, request.param_errors
        params = ",".join(
            self._open(d)
            + '"value":'
            + _s(own.get(d["id"], fallback.get(d["id"], "")))
            + ',"value_error":'
            + _s(errors.get(d["id"], ""))
            + "}"
            for d in product.params
        )
        items = ",".join(
            self._item_open(product.item(mpn), mpn)
            + f'"quantity":{_s(quantity)},"old_quantity":{_s(old)}}}'
            for mpn, quantity, old in asset.items
        )
        billing = ""
        if asset.billing_next is not None and product.billing_period:
            billing = (
                f',"billing":{{"period":{{"delta":1,"uom":{_s(product.billing_period)}}},'
                f'"next_date":{_s(iso(asset.billing_next))},"anniversary":{{"day":{asset.created.day}}}}}'
            )
        return (
            f'{{"id":{_s(asset.id)},"status":{_s(asset.status)},"external_id":{_s(asset.external_id)},'
            f'"external_uid":{_s(asset.external_uid)},"product":{self.fragment(product.summary)},'
            f'"connection":{self.fragment(asset.connection)},'
            f'"events":{_events(_s(iso(asset.created)), _s(iso(asset.updated)))},'
            f'"items":[{items}],"params":[{params}],"tiers":{self._tiers(asset.tiers)},'
            f'"configuration":{{"params":[]}},"marketplace":{self.fragment(asset.marketplace)},'
            f'"contract":{self.fragment(asset.contract)}{billing}}}'
        )

    def request(self, request: Request, drop: Iterable[str] = ()) -> str:
        """One request; ``drop`` names top-level fields to leave out (``select(-field)``)."""
        if request.raw is not None:  # imported: Connect's own object, not spliced from fragments
            dropped = set(drop)
            doc = render_request(request)
            return _dumps({key: value for key, value in doc.items() if key not in dropped})
        asset = request.asset
        created, updated = _s(iso(request.created)), _s(iso(request.updated))
        parts = [
            ("id", _s(request.id)),
            ("type", _s(request.type)),
            ("note", _s(request.note)),
            ("reason", _s(request.reason)),
            ("status", _s(request.status)),
            ("created", created),
            ("updated", updated),
            ("answered", "true" if request.answered else "false"),
            ("assignee", _dumps(request.assignee) if request.assignee else '""'),
            ("activation_key", _s(request.activation_key)),
            (
                "previous_approved_request",
                f'{{"id":{_s(request.previous_approved)}}}'
                if request.previous_approved
                else "null",
            ),
            ("effective_date", _s(iso(request.effective_date))),
            ("planned_date", _s(iso(request.planned_date))),
            ("events", _events(created, updated)),
            ("marketplace", self.fragment(asset.marketplace)),
            ("contract", self.fragment(asset.contract)),
        ]
        dropped = set(drop)
        if "asset" not in dropped:
            parts.append(("asset", self.asset(asset, request)))
        if request.template is not None:
            parts.append(("template", _dumps(request.template)))
        return (
            "{" + ",".join(f'"{name}":{text}' for name, text in parts if name not in dropped) + "}"
        )
