"""One ASGI app for the runner: the DevOps hub's routes (its websocket, ``accounts``,
``devops/...``, ``/admin/devops``) beside the mock marketplace, which answers everything else and
keeps its own lifespan. Every ``/public/v1`` answer carries Connect's ``Connect-Version`` header
(the runner's start-up validation reads it)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette

from cancel_sandbox.devops.hub import DevopsHub

__all__ = ["DevopsGateway"]

_HUB_PREFIXES = ("/public/v1/devops/", "/admin/devops")


class DevopsGateway:
    """Pure ASGI: ``hub``'s routes first, then ``marketplace`` (``.store`` stays reachable)."""

    def __init__(self, marketplace: Any, hub: DevopsHub) -> None:
        self.marketplace = marketplace
        self.store = marketplace.store
        self.hub = hub
        self._hub_app = Starlette(routes=hub.routes())
        self._version = hub.settings.connect_version.encode("latin-1")

    def _for_hub(self, scope: MutableMapping[str, Any]) -> bool:
        path = str(scope.get("path", "")).rstrip("/")
        return (
            scope["type"] == "websocket"
            or path == "/public/v1/accounts"
            or path.startswith(_HUB_PREFIXES)
            or path == "/admin/devops"
        )

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.marketplace(scope, receive, send)
            return
        target = self._hub_app if self._for_hub(scope) else self.marketplace
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/public/v1"):
            await target(scope, receive, send)
            return

        async def versioned(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connect-version", self._version)]
                message["headers"] = headers
            await send(message)

        await target(scope, receive, versioned)
