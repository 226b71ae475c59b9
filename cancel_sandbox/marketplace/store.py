"""The marketplace's state: products, subscriptions, requests, conversations, the ledger.

One :class:`Store` per app. Every read and every change holds ``store.lock`` (an ``RLock``): the
server runs one event loop, but in-process tests read and seed from their own thread. Changes run
inside :meth:`Store.change`, which writes the touched records and new ledger entries through to
SQLite (when a state file is configured) when the outermost change ends.

Time comes only from the injected clock. Scheduled requests fall due lazily: every API read calls
:meth:`Store.tick`, which moves requests whose ``planned_date`` has passed back to ``pending``
(a heap makes the check O(1) when nothing is due), so no background task is needed and a test
that moves a fake clock sees the effect on its next call.

The status rules themselves live in ``actions.py``; this module offers the primitives they use.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from cancel_sandbox.marketplace.errors import not_found
from cancel_sandbox.marketplace.evaluate import run_query, with_tiebreak
from cancel_sandbox.marketplace.fields import (
    MINUTE_REQUEST_FIELDS,
    REQUEST_FIELDS,
    SECOND_REQUEST_FIELDS,
)
from cancel_sandbox.marketplace.index import RequestIndex, bucket_key
from cancel_sandbox.marketplace.ledger import Entry, Ledger
from cancel_sandbox.marketplace.objects import IdMaker, iso, whole_seconds
from cancel_sandbox.marketplace.persist import SqliteState
from cancel_sandbox.marketplace.records import Asset, Conversation, Interner, Product, Request
from cancel_sandbox.marketplace.rql import Query

__all__ = ["Store", "SYSTEM", "ADMIN", "UI"]

SYSTEM, ADMIN, UI = "system", "admin", "ui"
# faults.CREATED_PRECISIONS that filter and order created coarser than it is served
_COARSE_FIELDS = {
    "compare_seconds": SECOND_REQUEST_FIELDS,
    "compare_minutes": MINUTE_REQUEST_FIELDS,
}


class Store:
    def __init__(
        self, *, clock: Callable[[], datetime], seed: int = 0, state: SqliteState | None = None
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.lock = threading.RLock()
        self.products: dict[str, Product] = {}
        self.marketplaces: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, str]] = {}  # who a request can be assigned to
        self.assets: dict[str, Asset] = {}
        self.requests: dict[str, Request] = {}
        self.conversations: dict[str, Conversation] = {}
        self.conversation_of: dict[str, str] = {}  # request id → conversation id
        self.index = RequestIndex()
        self.generation = 0  # generator rounds run so far: each round draws from its own seed
        self._scheduled: list[tuple[datetime, str]] = []
        self._ids: set[str] = set()
        self.ids = IdMaker(random.Random(f"runtime:{seed}"), taken=self.taken)
        self._state = state
        self._depth = 0
        self._dirty: dict[str, dict[str, Any]] = {}
        self._unsaved: list[Entry] = []
        self.ledger = Ledger(on_append=self._unsaved.append, clock=self.clock)
        # faults.CREATED_PRECISIONS: "exact" filters and orders created as served
        self.created_precision = "exact"

    # -- time, change tracking, persistence ---------------------------------------------------

    def taken(self, object_id: str) -> bool:
        """Whether an object with this id exists (ids are unique across kinds)."""
        return object_id in self._ids

    def remember(self, object_id: str) -> None:
        """Reserve an id made outside the registration methods (messages), also across restarts."""
        self._ids.add(object_id)

    def now(self) -> datetime:
        return whole_seconds(self.clock())

    @contextmanager
    def change(self) -> Iterator[None]:
        """Group changes; the outermost one writes them through to the state file."""
        with self.lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._flush()

    def mark(self, kind: str, record: Any) -> None:
        """Note that a record changed, so the state file gets it when the change ends."""
        if self._state is not None:
            self._dirty.setdefault(kind, {})[
                record["id"] if isinstance(record, dict) else record.id
            ] = record

    def _flush(self) -> None:
        if self._state is not None and (self._dirty or self._unsaved):
            docs = {
                kind: [
                    (object_id, record if isinstance(record, dict) else record.to_doc())
                    for object_id, record in records.items()
                ]
                for kind, records in self._dirty.items()
            }
            self._state.write(docs, self._unsaved, {"generation": self.generation})
        self._dirty.clear()
        self._unsaved.clear()

    def restore(self) -> bool:
        """Load everything from the state file; False when it holds nothing yet."""
        if self._state is None or self._state.is_empty():
            return False
        docs, entries, meta = self._state.load()
        intern = Interner()
        with self.change():
            for doc in docs["products"]:
                self.add_product(Product.from_doc(doc))
            for doc in docs["marketplaces"]:
                self.add_marketplace(doc)
            for doc in docs.get("users", []):
                self.add_user(doc)
            for doc in docs["assets"]:
                self.add_asset(Asset.from_doc(doc, self.products, intern))
            conversations = {
                doc["instance_id"]: Conversation.from_doc(doc, intern)
                for doc in docs["conversations"]
            }
            for doc in docs["requests"]:
                request = Request.from_doc(doc, self.assets)
                self.add_request(request, conversations.pop(request.id, None), restoring=True)
            for conversation in conversations.values():  # about objects other than requests
                self.add_conversation(conversation)
            self.ledger = Ledger(entries, on_append=self._unsaved.append, clock=self.clock)
            self.generation = int(meta.get("generation", 0))
            self._dirty.clear()  # all of it came from the file: nothing to write back
        return True

    # -- registration (seeding, restoring, creating) --------------------------------------------

    def add_product(self, product: Product) -> None:
        with self.change():
            self.products[product.id] = product
            self._ids.add(product.id)
            self._ids.update(template["id"] for template in product.templates)
            self.mark("products", product)

    def add_marketplace(self, marketplace: dict[str, Any]) -> None:
        with self.change():
            self.marketplaces[marketplace["id"]] = marketplace
            self._ids.add(marketplace["id"])
            self.mark("marketplaces", marketplace)

    def add_user(self, user: dict[str, str]) -> None:
        with self.change():
            self.users[user["id"]] = user
            self._ids.add(user["id"])
            self.mark("users", user)

    def user(self, user_id: str) -> dict[str, str] | None:
        return self.users.get(user_id)

    def add_asset(self, asset: Asset) -> None:
        with self.change():
            if asset.id in self.assets:
                raise ValueError(f"duplicate subscription id {asset.id}")
            self.assets[asset.id] = asset
            self._ids.add(asset.id)
            self.mark("assets", asset)

    def add_request(
        self, request: Request, conversation: Conversation | None = None, *, restoring: bool = False
    ) -> Conversation:
        """Register a request and its conversation (created here when not given)."""
        with self.change():
            if request.id in self.requests:
                raise ValueError(f"duplicate request id {request.id}")
            if conversation is None:
                conversation = self.new_conversation(request)
            request.conversation_id = conversation.id
            self.requests[request.id] = request
            self._ids.update((request.id, conversation.id))
            if not restoring:
                request.asset.request_ids.append(request.id)
                self.mark("assets", request.asset)
            self.index.add(request)
            self.conversations[conversation.id] = conversation
            self.conversation_of[request.id] = conversation.id
            self._ids.update(message["id"] for message in conversation.messages)
            if request.status == "scheduled" and request.planned_date is not None:
                heapq.heappush(self._scheduled, (request.planned_date, request.id))
            self.mark("requests", request)
            self.mark("conversations", conversation)
            return conversation

    def add_conversation(self, conversation: Conversation) -> None:
        """Register a conversation about another object than a request (POST /conversations)."""
        with self.change():
            self.conversations[conversation.id] = conversation
            self._ids.add(conversation.id)
            self.mark("conversations", conversation)

    def new_conversation(self, request: Request) -> Conversation:
        asset = request.asset
        vendor = asset.connection.get("vendor") or asset.product.vendor
        customer = asset.tiers.get("customer") or {}
        accounts = [{"id": vendor["id"], "name": vendor.get("name", "")}]
        if customer.get("id"):
            accounts.append({"id": customer["id"], "name": customer.get("name", "")})
        return Conversation(
            id=self.ids.conversation(),
            instance_id=request.id,
            topic=f"Request {request.id}",
            created=request.created,
            creator={"id": vendor["id"], "name": vendor.get("name", "")},
            accounts=accounts,
        )

    # -- primitives for the status rules ----------------------------------------------------------

    def set_request_status(
        self, request: Request, status: str, actor: str, detail: str | None = None
    ) -> None:
        with self.change():
            before = request.status
            self.index.remove(request, bucket_key(request))
            request.status = status
            request.updated = self.now()
            self.index.add(request)
            if status == "scheduled" and request.planned_date is not None:
                heapq.heappush(self._scheduled, (request.planned_date, request.id))
            self.ledger.append(
                actor,
                "request",
                request.id,
                "status",
                before=before,
                after=status,
                detail=detail,
            )
            self.mark("requests", request)

    def set_asset_status(
        self, asset: Asset, status: str, actor: str, detail: str | None = None
    ) -> None:
        if asset.status == status:
            return
        with self.change():
            # Requests are indexed by their subscription's product, connection and marketplace,
            # never by its status, so the index is unaffected.
            before = asset.status
            asset.status = status
            asset.updated = self.now()
            if status == "terminated":
                asset.billing_next = None
            self.ledger.append(
                actor,
                "asset",
                asset.id,
                "status",
                before=before,
                after=status,
                detail=detail,
            )
            self.mark("assets", asset)

    def touch(
        self,
        request: Request,
        actor: str,
        event: str,
        *,
        before: str | None = None,
        after: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record a change of a request that is not a status change (assignment, parameters)."""
        with self.change():
            request.updated = self.now()
            self.ledger.append(
                actor,
                "request",
                request.id,
                event,
                before=before,
                after=after,
                detail=detail,
            )
            self.mark("requests", request)

    def touch_asset(self, asset: Asset) -> None:
        self.mark("assets", asset)

    def record(
        self,
        actor: str,
        kind: str,
        object_id: str,
        event: str,
        *,
        detail: str | None = None,
        after: str | None = None,
    ) -> None:
        with self.change():
            self.ledger.append(actor, kind, object_id, event, after=after, detail=detail)

    def tick(self) -> None:
        """Return scheduled requests whose planned date has passed to pending."""
        if not self._scheduled:
            return
        now = self.now()
        if self._scheduled[0][0] > now:
            return
        with self.change():
            while self._scheduled and self._scheduled[0][0] <= now:
                planned, request_id = heapq.heappop(self._scheduled)
                request = self.requests.get(request_id)
                # Stale heap entries (revoked, rescheduled) are skipped, not removed eagerly.
                if (
                    request is not None
                    and request.status == "scheduled"
                    and request.planned_date == planned
                ):
                    self.set_request_status(
                        request, "pending", SYSTEM, detail="planned date reached"
                    )

    # -- reads ------------------------------------------------------------------------------------

    def request(self, request_id: str) -> Request:
        self.tick()
        request = self.requests.get(request_id)
        if request is None:
            raise not_found("Request", request_id)
        return request

    def asset(self, asset_id: str) -> Asset:
        asset = self.assets.get(asset_id)
        if asset is None:
            raise not_found("Asset", asset_id)
        return asset

    def product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            raise not_found("Product", product_id)
        return product

    def conversation(self, conversation_id: str) -> Conversation:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise not_found("Conversation", conversation_id)
        return conversation

    def list_requests(self, query: Query) -> tuple[int, list[Request]]:
        with self.lock:
            self.tick()
            coarse = _COARSE_FIELDS.get(self.created_precision)
            if coarse is not None:
                # The fault: filter and order at whole seconds (or minutes) while serving the
                # fractions. A scan (the index keys hold the exact times): only under this fault.
                return run_query(self.requests.values(), query, coarse, ("created", "id"))
            return self.index.query(
                query.filter,
                with_tiebreak(query.ordering),
                query.offset,
                query.limit,
                self.requests,
                REQUEST_FIELDS,
            )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self.tick()
            by_status: Counter[str] = Counter()
            cancels: Counter[str] = Counter()
            by_type: Counter[str] = Counter()
            for (status, type_, *_rest), count in self.index.counts().items():
                by_status[status] += count
                by_type[type_] += count
                if type_ == "cancel":
                    cancels[status] += count
            return {
                "requests": sum(by_status.values()),
                "requests_by_status": dict(sorted(by_status.items())),
                "requests_by_type": dict(sorted(by_type.items())),
                "cancels_by_status": dict(sorted(cancels.items())),
                "subscriptions": len(self.assets),
                "subscriptions_by_status": dict(
                    sorted(Counter(a.status for a in self.assets.values()).items())
                ),
                "products": len(self.products),
                "approve_templates": {p.id: p.approve_template() for p in self.products.values()},
                "marketplaces": len(self.marketplaces),
                "messages": sum(len(c.messages) for c in self.conversations.values()),
                "ledger_seq": self.ledger.last_seq,
                "now": iso(self.now()),
            }

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
