"""The runner's "latest release" lookup, answered on loopback.

connect-extension-runner's start-up validation asks ``https://pypi.org/pypi/connect-extension-runner
/json`` for the latest release of Connect's major version (a fixed URL in its constants) and stops
when the installed runner is older. The only lever the runner leaves is the proxy its ``requests``
call honours: with ``https_proxy`` pointing here (and ``no_proxy`` keeping loopback direct), this
small HTTP proxy accepts ``CONNECT pypi.org:443`` only, terminates TLS with a certificate for
that host from the local CA (trusted by the runner through ``REQUESTS_CA_BUNDLE``), and answers
that one path with the release it was given. Any other host or path is refused; nothing leaves the
machine. The runner's websocket reads ``HTTPS_PROXY`` (upper case) only, so the lower-case variable
leaves it alone.

Bounded: one thread per connection, a 10 s socket timeout, request heads of at most 16 KiB.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from pathlib import Path

from cancel_sandbox.devops.pki import INDEX_HOST

__all__ = ["IndexAnswer", "INDEX_PATH"]

INDEX_PATH = "/pypi/connect-extension-runner/json"
_TIMEOUT = 10.0
_MAX_HEAD = 16 * 1024


def _read_head(conn: socket.socket | ssl.SSLSocket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
        if len(head) > _MAX_HEAD:
            break
    return head


def _reply(conn: socket.socket | ssl.SSLSocket, status: str, body: bytes, kind: str) -> None:
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode("ascii")
        + body
    )


class IndexAnswer:
    """A loopback proxy answering the runner's release lookup with ``release``; a context manager.

    ``lookups`` counts the answers given (what a test asserts the runner asked)."""

    def __init__(self, cert: Path, key: Path, release: str, host: str = "127.0.0.1") -> None:
        self.release = release
        self.lookups = 0
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        answer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                answer._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"index-{self.port}", daemon=True
        )

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def body(self) -> bytes:
        # The shape the runner reads: releases of the major version, else info.version.
        data = {"info": {"version": self.release}, "releases": {self.release: []}}
        return json.dumps(data).encode()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(_TIMEOUT)
        try:
            head = _read_head(conn).decode("latin-1")
            parts = head.split("\r\n", 1)[0].split()
            if len(parts) != 3 or parts[0] != "CONNECT" or parts[1] != f"{INDEX_HOST}:443":
                _reply(conn, "403 Forbidden", b"only the runner's release lookup is answered\n",
                       "text/plain")  # fmt: skip
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with self._tls.wrap_socket(conn, server_side=True) as tls:
                request = _read_head(tls).decode("latin-1").split("\r\n", 1)[0].split()
                if len(request) == 3 and request[0] == "GET" and request[1] == INDEX_PATH:
                    self.lookups += 1
                    _reply(tls, "200 OK", self.body(), "application/json")
                else:
                    _reply(tls, "404 Not Found", b'{"message": "Not Found"}', "application/json")
        except (OSError, ssl.SSLError, UnicodeError):
            return  # a client that went away or spoke something else: nothing to keep

    def start(self) -> IndexAnswer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> IndexAnswer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
