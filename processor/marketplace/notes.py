"""Messages on a request's conversation, posted at most once.

A conversation message is not idempotent: Connect takes the same text twice. Two things keep a
note from being posted twice:

- after an ambiguous failure (no answer, a 5xx) the newest messages are searched for the same
  text before any new attempt;
- with a ``once_key``, a key this process already posted is not posted again, and, unless the
  caller says it is the note's first attempt, the newest messages are searched before the post:
  a note posted before a crash (between the post and the journal's record of it) is found there.

A caller that knows no earlier attempt of the note can have been sent (``first_attempt=True``)
saves that read: one Connect call of the four or five a request costs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from connect.client import ConnectClient

from processor.marketplace.errors import ActionRefused, NotFound
from processor.marketplace.retry import Retrier
from processor.urls import UnsafeSegment, connect_id_problem, segment

__all__ = ["NOTE_MAX_CHARS", "Notes"]

NOTE_MAX_CHARS = 2000
_CONVERSATIONS_CACHED = 1024  # request id -> conversation id; one entry is ~100 bytes
_ONCE_KEYS_KEPT = 4096
_MESSAGES_SCANNED = 100  # the newest messages searched for an earlier copy of a note

# (operation, send, reconcile) -> result: the gateway's way of running a non-idempotent call.
Ambiguous = Callable[[str, Callable[[], Any], Callable[[], Any]], Any]


class _LRU:
    """A small thread-safe LRU mapping."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class Notes:
    """The gateway's notes: conversation look-ups (cached), the once-keys posted, the post."""

    def __init__(
        self,
        client: ConnectClient,
        retry: Retrier,
        http: dict[str, Any],
        ambiguous: Ambiguous,
    ) -> None:
        self._client = client
        self._retry = retry
        self._http = http
        self._ambiguous = ambiguous
        self._conversations = _LRU(_CONVERSATIONS_CACHED)
        self._posted = _LRU(_ONCE_KEYS_KEPT)

    def post(
        self, request_id: str, text: str, *, once_key: str | None, first_attempt: bool
    ) -> bool:
        """See :meth:`processor.marketplace.Marketplace.post_note`."""
        text = text[:NOTE_MAX_CHARS]
        if not text.strip():
            raise ValueError("a note needs text")
        if once_key is not None and self._posted.get(once_key):
            return False
        conversation_id = self.conversation(request_id)
        if once_key is not None and not first_attempt and self.has(conversation_id, text):
            self._posted.put(once_key, True)
            return False
        messages = self._client.conversations[_conversation(conversation_id)].messages
        payload = {"text": text, "type": "message"}
        self._ambiguous(
            "post_note",
            lambda: messages.create(payload=payload, **self._http),
            lambda: True if self.has(conversation_id, text, retries=False) else None,
        )
        if once_key is not None:
            self._posted.put(once_key, True)
        return True

    def conversation(self, request_id: str) -> str:
        cached = self._conversations.get(request_id)
        if cached:
            return str(cached)
        problem = connect_id_problem("request", request_id)
        if problem is not None:
            raise ActionRefused(None, "unsafe_id", [f"request id {problem}"], operation="post_note")
        found = self._client.conversations.filter(instance_id=request_id).configure(**self._http)
        first = self._retry.call("find_conversation", lambda: self._retry.once(found.first))
        if not isinstance(first, dict) or not first.get("id"):
            raise NotFound(f"find_conversation: request {request_id} has no conversation")
        if connect_id_problem("conversation", first["id"]) is not None:
            raise NotFound(f"find_conversation: request {request_id} has no usable conversation id")
        self._conversations.put(request_id, first["id"])
        return str(first["id"])

    def has(self, conversation_id: str, text: str, *, retries: bool = True) -> bool:
        """Whether ``text`` is among the conversation's newest messages."""
        newest = (
            self._client.conversations[_conversation(conversation_id)]
            .messages.all()
            .order_by("-created")
            .configure(**self._http)
            .limit(_MESSAGES_SCANNED)
        )

        def read() -> list[dict[str, Any]]:
            return self._retry.once(lambda: list(newest[0:_MESSAGES_SCANNED]))

        messages = self._retry.call("read_messages", read) if retries else read()
        return any(isinstance(m, dict) and m.get("text") == text for m in messages)


def _conversation(conversation_id: str) -> str:
    """The conversation id as one checked path segment (:func:`processor.urls.segment`)."""
    try:
        return segment("conversation", conversation_id)
    except UnsafeSegment as unsafe:
        raise ActionRefused(None, "unsafe_id", [str(unsafe)], operation="post_note") from None
