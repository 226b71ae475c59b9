"""The ops server's front door (pure ASGI): size limits, the loopback host check and the token.

In this order, before any route runs:

1. Request heads larger than ``max_header_bytes`` (the request line counts: method, path and
   query as sent, and every header name and value) are answered 431, or 414 when the request line
   alone is over the limit; either answer closes the connection. Bodies larger than
   ``max_body_bytes`` 413 (by ``Content-Length`` at once, or while reading a chunked body). A body
   is read whole (it is small by then) and replayed to the app.
2. On a loopback-bound server the ``Host`` header must name a loopback host: a web page elsewhere
   cannot reach the unauthenticated page by DNS rebinding (answered 421).
3. With a token, every path except the probes (``/healthz``, ``/readyz``: they disclose only
   booleans and adapter names, and a kubelet sends no secrets) needs one of: ``Authorization:
   Bearer <token>``; a ``?token=<token>`` query on a GET, answered with a redirect to the same URL
   without it and an HttpOnly, SameSite=Strict session cookie; or that cookie. The cookie holds an
   HMAC of the token, never the token itself, and every comparison is in constant time. A missing
   or wrong token is answered 401, and nothing about the expected token is echoed.

Limits: the cookie carries no expiry of its own and is not marked ``Secure`` (this server speaks
plain HTTP; put TLS in front of it when it leaves the host). Changing the token ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.requests import cookie_parser

from processor.config.hosts import is_loopback_host

__all__ = ["Guard", "COOKIE", "PROBES", "MAX_HEAD_BYTES", "is_loopback_host"]

# Starlette's own ASGI types: the guard wraps its application and is served by uvicorn.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_HEAD_BYTES = 16 * 1024  # request line and headers; README: "heads over 16 KiB"
COOKIE = "ops_session"
PROBES = frozenset({"/healthz", "/readyz"})
_SESSION_LABEL = b"cancel-processor status page session"


def _same_site(scope: Scope) -> bytes:
    """The request's path as a redirect target that stays on this server (the token taken out of
    the address bar and of any Referer). Browsers read a leading ``//``, ``/\\`` or ``\\`` (and the
    same with tabs or newlines between, which they drop) as a link to another host, so every leading
    slash, backslash and control character goes, and the rest is percent-encoded from the decoded
    path: nothing in it can start a host name."""
    path = str(scope.get("path") or "/")
    rest = path.lstrip("/\\\t\r\n\x00\x0b\x0c ")
    return ("/" + quote(rest, safe="/:@!$&'()*+,;=-._~")).encode("ascii")


def _digest(value: str) -> bytes:
    # Fixed-length digests: compare_digest then leaks nothing, not even the length of a guess.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_CLOSE = [(b"connection", b"close")]  # h11 then closes the connection after the answer


def _request_line_bytes(scope: Scope) -> int:
    """The request line's size as sent: method, target (path and query, still encoded) and
    version, with their separators."""
    raw_path = scope.get("raw_path") or str(scope.get("path") or "").encode("utf-8")
    query = scope.get("query_string") or b""
    method = str(scope.get("method") or "")
    return len(method) + 1 + len(raw_path) + (1 + len(query) if query else 0) + len(" HTTP/1.1")


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        loopback: bool,
        max_body_bytes: int = 64 * 1024,
        max_header_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self.app = app
        self.loopback = loopback
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self._token = _digest(token) if token else None
        self._session = (
            hmac.new(token.encode("utf-8"), _SESSION_LABEL, hashlib.sha256).hexdigest()
            if token
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        line = _request_line_bytes(scope)
        if line > self.max_header_bytes:
            await _plain(send, 414, "request line too long\n", _CLOSE)
            return
        if line + sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            await _plain(send, 431, "request headers too large\n", _CLOSE)
            return
        length = self._header(headers, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            # The body is left unread: the connection closes, or its bytes would be read as the
            # next request (a "request line" of 64 KiB: 414 to the client's next call).
            await _plain(
                send, 413, f"request body larger than {self.max_body_bytes} bytes\n", _CLOSE
            )
            return
        if self.loopback and not is_loopback_host(self._header(headers, b"host") or ""):
            await _plain(send, 421, "this server answers only to a loopback host name\n")
            return
        if self._token is not None and scope["path"] not in PROBES:
            if not await self._authorized(scope, send):
                return
        body = await self._read_body(receive, send)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
        for key, value in headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """True to go on; otherwise the answer (401, or the redirect that sets the cookie) is
        sent."""
        assert self._token is not None and self._session is not None
        headers = scope["headers"]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [value for key, value in query if key == "token"]
        if offered and scope["method"] in ("GET", "HEAD"):
            if not hmac.compare_digest(_digest(offered[0]), self._token):
                await self._refuse(send)
                return False
            kept = urlencode([(key, value) for key, value in query if key != "token"])
            location = _same_site(scope) + (b"?" + kept.encode("ascii") if kept else b"")
            cookie = f"{COOKIE}={self._session}; HttpOnly; SameSite=Strict; Path=/"
            await _plain(
                send,
                303,
                "signed in\n",
                [(b"location", location), (b"set-cookie", cookie.encode("ascii"))],
            )
            return False
        authorization = self._header(headers, b"authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            _digest(credentials.strip()), self._token
        ):
            return True
        session = cookie_parser(self._header(headers, b"cookie") or "").get(COOKIE, "")
        if session and hmac.compare_digest(_digest(session), _digest(self._session)):
            return True
        await self._refuse(send)
        return False

    @staticmethod
    async def _refuse(send: Send) -> None:
        await _plain(
            send,
            401,
            "a token is required: send 'Authorization: Bearer <token>' or open "
            "this page once with ?token=<token>\n",
            [(b"www-authenticate", b'Bearer realm="cancel-processor"')],
        )

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body (None after answering 413): the app then reads it from memory."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _plain(
                    send, 413, f"request body larger than {self.max_body_bytes} bytes\n", _CLOSE
                )
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay
