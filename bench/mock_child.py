"""A mock server (``mock-marketplace`` or ``mock-vendor``) in a child process, on a port it binds
itself: ``python -m bench.mock_child PORT_FILE mock-marketplace --generate 100 ...``.

Asking the kernel for a free port in the parent and binding it later in the child leaves a gap in
which another process's outgoing connection may take the port ("address already in use" on a
busy machine). Here the child binds port 0 and writes the port it got to ``PORT_FILE`` (written
whole, then renamed into place); :class:`bench.servers.MockServers` waits for that file. The
command is the installed CLI's, unchanged, except that its ``serve`` uses the bound socket.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from processor.ops import serving

__all__ = ["main"]


def _serve_on_port_zero(port_file: Path) -> Any:
    def serve(app: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        bound = int(sock.getsockname()[1])
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(str(bound))
        os.replace(partial, port_file)
        uvicorn.Server(serving._config(app, host, bound, **kwargs)).run(sockets=[sock])

    return serve


def main(argv: list[str]) -> int:
    port_file, command = Path(argv[0]), argv[1:]
    # Both CLIs look serve up in processor.ops.serving (one at import, one at call time): replaced
    # before either is imported.
    serving.serve = _serve_on_port_zero(port_file)
    from processor.cli.main import main as cli

    return int(cli([*command, "--port", "0"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
