"""The connect-openapi-client ``ConnectClient`` the gateway talks through, built once per gateway.

Built with the client's own retries off (the gateway owns retries), pages not accumulated, our
timeouts and User-Agent, and two things the stock client does per call that cost CPU on every
request:

- requests reads the environment on every call of a session that trusts it (proxy variables,
  ``NO_PROXY``, ``.netrc``, ``REQUESTS_CA_BUNDLE``: about a tenth of the processor's CPU at zero
  latency). Here the environment is read once, when the gateway is built: its sessions do not
  trust the environment, and carry the proxies and CA bundle the environment named for the
  endpoint then (:func:`environment_proxies`, :func:`environment_verify`), so ``HTTPS_PROXY``,
  ``NO_PROXY`` and ``REQUESTS_CA_BUNDLE`` work as before. A ``.netrc`` is no longer consulted: its
  credentials would have replaced the Authorization header that carries the API key;
- the client rebuilds its User-Agent on every call (:func:`cache_user_agent`).

Every answer passes :func:`processor.marketplace.boundary.receive` inside the session, before the
client sees it: the body is streamed and capped, JSON is parsed there, once, with limits, and the
client's ``execute`` returns that value instead of parsing the body again (unbounded).

Every worker thread gets its own ``requests.Session`` (the client keeps them per thread); all of
them share one connection pool sized to the worker count, so every worker keeps its connection
alive between calls.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import requests
from connect.client import ClientError, ConnectClient
from connect.client import utils as connect_utils
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from processor.marketplace import boundary
from processor.marketplace.settings import GatewaySettings

__all__ = ["build_client", "cache_user_agent", "environment_proxies", "environment_verify"]


def environment_proxies(endpoint: str) -> dict[str, str]:
    """The proxies requests would pick from the environment for ``endpoint`` (none when
    ``NO_PROXY`` covers its host), read now. Every call the gateway makes goes to that host."""
    return dict(get_environ_proxies(endpoint))


def environment_verify(verify: bool | str, environ: Mapping[str, str] | None = None) -> bool | str:
    """What requests verifies against when a call says ``verify``: a configured CA bundle as it
    is; ``True`` becomes ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) when one is set."""
    env = os.environ if environ is None else environ
    if verify is True:
        return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
    return verify


class _Session(requests.Session):
    """A session whose environment was read once, up front: ``merge_environment_settings`` (run by
    requests on every call) only merges what the call itself says with the session's own."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        merged = {**self.proxies, **(proxies or {})}
        return {
            "proxies": {k: v for k, v in merged.items() if v is not None},
            "stream": self.stream if stream is None else stream,
            "verify": self.verify if verify is None else verify,
            "cert": self.cert if cert is None else cert,
        }

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        # Streamed, so that the boundary decides how much of the body is ever read.
        kwargs["stream"] = True
        return boundary.receive(super().request(method, url, *args, **kwargs))


class _Client(ConnectClient):  # type: ignore[misc]  # the client has no type hints
    """``ConnectClient`` with sessions of our making: no per-call environment read, one pool."""

    def __init__(
        self, *args: Any, transport: HTTPAdapter, proxies: Mapping[str, str], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport
        self._proxies = dict(proxies)

    def execute(self, method: str, path: str, **kwargs: Any) -> Any:
        """The client's ``execute`` (the path every call takes), returning the JSON value the
        boundary parsed instead of parsing the body again without limits."""
        url = f"{self.endpoint}/{path}"
        kwargs = self._prepare_call_kwargs(kwargs)
        self.response = None
        try:
            self._execute_http_call(method, url, kwargs)
        except requests.RequestException as exc:
            details = self._get_api_error_details() or {}
            status = self.response.status_code if self.response is not None else None
            raise ClientError(status_code=status, **details) from exc
        response = self.response
        assert isinstance(response, requests.Response)  # set by _execute_http_call
        if response.status_code == 204:
            return None
        if str(response.headers.get("Content-Type", "")).startswith("application/json"):
            return boundary.parsed(response)
        return response.content

    def _get_api_error_details(self) -> dict[str, Any] | None:
        # The client's own reads the body again and trusts its shape; here: the boundary's value,
        # only a JSON object with a text error code and a list of texts, each bounded.
        body = boundary.parsed(self.response) if self.response is not None else None
        return boundary.api_error(body)

    @property
    def session(self) -> requests.Session:
        local = self._thread_locals
        session: requests.Session | None = getattr(local, "session", None)
        if session is None:
            session = _Session()
            session.trust_env = False  # read once, in build_client
            session.proxies = dict(self._proxies)
            session.mount(self.endpoint, self._transport)
            local.session = session
        return session


def build_client(settings: GatewaySettings) -> ConnectClient:
    """The gateway's client: see the module docstring."""
    cache_user_agent()
    # Room for every worker in one pool: with fewer connections than workers, every call beyond
    # the pool's size would open a fresh TCP (and TLS) connection and throw it away.
    transport = HTTPAdapter(pool_connections=1, pool_maxsize=max(settings.connections, 1))
    return _Client(
        settings.authorization,
        endpoint=settings.endpoint,
        max_retries=0,  # the gateway owns retries; see processor.marketplace.retry
        timeout=(settings.timeout_connect, settings.timeout_read),
        resourceset_append=False,  # a 100,000-request backlog must not pile up in memory
        default_limit=settings.page_size,
        default_headers={"User-Agent": settings.user_agent},
        transport=transport,
        proxies=environment_proxies(settings.endpoint),
    )


def cache_user_agent() -> None:
    """connect-openapi-client rebuilds its User-Agent on every call, reading its own version from
    the installed package metadata (a file read and an e-mail header parse, ~0.3 ms of CPU per
    call). The value cannot change while the process runs, so it is computed once."""
    build = getattr(connect_utils, "_get_user_agent", None)
    if callable(build) and not hasattr(build, "cache_info"):
        connect_utils._get_user_agent = functools.lru_cache(maxsize=1)(build)
