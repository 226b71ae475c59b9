"""Running the local servers: in the foreground (CLI) or in a background thread (tests, demo).

Both use uvicorn, a production-grade ASGI server (with uvloop and httptools when installed), so that
what benchmarks measure is the processor and not a debug server.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["free_port", "serve", "ServerThread", "HeadLimit", "MAX_HEADER_BYTES"]

# Request heads larger than this are answered 431. Enforced in ASGI as well as by h11, because
# uvicorn picks httptools when it is installed, and httptools sets no limit of its own.
MAX_HEADER_BYTES = 32 * 1024


class HeadLimit:
    """Pure ASGI: a request whose header names and values exceed ``max_bytes`` gets a 431."""

    def __init__(self, app: Any, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_bytes
        ):
            body = b"request headers too large\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _config(app: Any, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(
        HeadLimit(app, kwargs.pop("max_header_bytes", MAX_HEADER_BYTES)),
        host=host,
        port=port,
        log_level=kwargs.pop("log_level", "warning"),
        access_log=False,
        # Connections from a 32-worker client pool stay open between calls.
        timeout_keep_alive=kwargs.pop("timeout_keep_alive", 30),
        # Bounded request head; bodies are bounded by the apps themselves.
        h11_max_incomplete_event_size=kwargs.pop("h11_max_incomplete_event_size", 64 * 1024),
        **kwargs,
    )


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    uvicorn.Server(_config(app, host, port, **kwargs)).run()


class ServerThread:
    """A uvicorn server on a free loopback port in a daemon thread; a context manager.

    >>> with ServerThread(app) as server:
    ...     requests.get(server.url + "/healthz")
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any
    ) -> None:
        self.host = host
        self._socket: socket.socket | None = None
        if port:
            self.port = port
        else:
            # Bind port 0 here and hand the bound socket to uvicorn: asking for a free port and
            # binding it later lets another process's outgoing connection take it in between
            # ("address already in use" under a busy test run).
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._socket = socket.socket(family, socket.SOCK_STREAM)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, 0))
            self.port = int(self._socket.getsockname()[1])
        self._server = uvicorn.Server(_config(app, self.host, self.port, **kwargs))
        sockets = [self._socket] if self._socket is not None else None
        # uvicorn captures signals only on the main thread, so a background server leaves them
        # alone.
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=sockets),
            name=f"server-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
