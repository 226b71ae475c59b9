"""uvicorn's h11 protocol with a bounded request head, in time and in size, for the ops server.

uvicorn waits for a request head as long as the client takes: a connection that sends half a head
(or nothing) is held for ever, and ``limit_concurrency`` counts it, so 32 such connections would
answer every probe 503. Its size bound is h11's ``max_incomplete_event_size``, which applies only to
a head still incomplete (a 70 KB request line arriving at once is parsed whole) and is answered 400.

:func:`bounded_h11` returns a protocol class that, for each request:

- closes the connection when the request (its head, and its body if it has one: the ops server
  takes at most 64 KiB) is not read whole within ``head_timeout`` seconds of its first byte, or of
  the connection's start (408 when part of it came, else just closed); an idle kept-alive
  connection between requests is left to uvicorn's keep-alive timeout;
- answers 414 (request line still without its end) or 431 and closes, as soon as an incomplete
  head passes ``max_head_bytes``. A complete head is checked exactly by
  :class:`~processor.ops.guard.Guard` (request line and headers against the same limit).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["bounded_h11", "HEAD_TIMEOUT"]

HEAD_TIMEOUT = 5.0  # seconds a request head may take to arrive


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


class _BoundedH11(H11Protocol):
    head_timeout: float = HEAD_TIMEOUT
    max_head_bytes: int = 16 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._line_ended = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._read: Any = None  # the last request cycle read whole
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._head_timer is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        before = self.cycle
        super().data_received(data)
        current = self.cycle
        if current is not None and current is not self._read and not current.more_body:
            self._read = current  # this request is read whole, body included
            self._disarm()
            return
        if current is not before or not waiting or self.transport.is_closing():
            return  # a head just completed (its body still coming), or a body being read
        self._head_bytes += len(data)
        self._line_ended = self._line_ended or b"\n" in data
        if self._head_bytes > self.max_head_bytes:
            if self._line_ended:
                self._refuse(_answer(431, "Request Header Fields Too Large", "head too large\n"))
            else:
                self._refuse(_answer(414, "URI Too Long", "request line too long\n"))

    def _arm(self) -> None:
        self._head_bytes, self._line_ended = 0, False
        self._head_timer = self.loop.call_later(self.head_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        midway = self.cycle is not None and self.cycle is not self._read
        if self._head_bytes and not midway:
            self._refuse(_answer(408, "Request Timeout", "request head not received in time\n"))
        else:  # nothing came, or a body stalled under a running request: its app sees a disconnect
            self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        self.transport.write(answer)
        self.transport.close()


def bounded_h11(*, head_timeout: float = HEAD_TIMEOUT, max_head_bytes: int = 16 * 1024) -> Any:
    """An h11 protocol class for uvicorn's ``http=`` with these bounds on each request head."""
    return type(
        "BoundedH11",
        (_BoundedH11,),
        {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes},
    )
