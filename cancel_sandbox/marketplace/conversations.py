"""Conversations: one per request, created with it; messages posted by API callers.

``GET /conversations?instance_id=PR-...`` is answered from the request → conversation map, not by
scanning every conversation; other filters scan (conversations are only listed by request in
practice). A posted message is ``{"text", "type": "message" | "private"}``; its author is the API
key's identifier, and the ledger records it against the request id so that tests can count how
often a processor wrote to a request's conversation.
"""

from __future__ import annotations

from typing import Any

from cancel_sandbox.marketplace.errors import ApiError, invalid
from cancel_sandbox.marketplace.evaluate import run_query
from cancel_sandbox.marketplace.fields import CONVERSATION_FIELDS
from cancel_sandbox.marketplace.objects import iso
from cancel_sandbox.marketplace.records import Conversation
from cancel_sandbox.marketplace.rql import Cmp, Query, conjuncts
from cancel_sandbox.marketplace.store import Store

__all__ = ["MESSAGE_MAX_CHARS", "list_conversations", "post_message"]

MESSAGE_MAX_CHARS = 10_000


def list_conversations(store: Store, query: Query) -> tuple[int, list[Conversation]]:
    with store.lock:
        candidates: Any = store.conversations.values()
        for term in conjuncts(query.filter):
            if isinstance(term, Cmp) and term.field == "instance_id" and term.op in ("eq", "in"):
                wanted = list(dict.fromkeys([term.value] if term.op == "eq" else term.value))
                if all(instance in store.conversation_of for instance in wanted):
                    candidates = [store.conversations[store.conversation_of[i]] for i in wanted]
                # else: a conversation about another object (POST /conversations): scan
                break
        return run_query(candidates, query, CONVERSATION_FIELDS, ("created", "id"))


def post_message(store: Store, conversation_id: str, body: Any, actor: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("body", "a JSON object is required.")
    text, kind = body.get("text"), body.get("type", "message")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "REQ_005", "Missed fields: text.")
    if len(text) > MESSAGE_MAX_CHARS:
        raise invalid("text", f"ensure this field has no more than {MESSAGE_MAX_CHARS} characters.")
    if kind not in ("message", "private"):
        raise invalid("type", f"{kind!r} is not a valid choice (message, private).")
    with store.change():
        conversation = store.conversation(conversation_id)
        now = iso(store.now()) or ""
        author = {"id": actor, "name": f"API key {actor}"}
        message = {
            "id": store.ids.message(),
            "conversation": conversation.id,
            "account": conversation.accounts[0],
            "created": now,
            "creator": author,
            "text": text,
            "type": kind,
            "events": {"created": {"at": now, "by": author}, "updated": {"at": now, "by": author}},
        }
        conversation.messages.append(message)
        store.remember(message["id"])
        store.mark("conversations", conversation)
        store.ledger.append(
            actor,
            "message",
            conversation.instance_id,
            "message",
            after=message["id"],
            detail=kind,
        )
        return message
