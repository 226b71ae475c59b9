"""The processor objects behind the events application, built lazily and shared between tasks.

connect-extension-runner makes a new application object for every task, so nothing that must
outlive a task (the journal's connection pool, the lease heartbeat, circuit breakers, the gateway's
template cache) can live on it. :class:`RuntimeCache` keeps one
:class:`~processor.daemon.runtime.Runtime` per distinct installation configuration: the extension's
variables plus the endpoint and API key of the client the runner gave the task. A change of
variables builds a new runtime; the old one is closed once the tasks still using it have finished
(at most ``size`` are kept).

The Connect gateway does not use the runner's client as it is: that client retries POSTs on 5xx by
itself (``max_retries=3``) under the gateway's own retries, which multiplies attempts of
non-idempotent calls. :func:`gateway_client` builds a sibling ``ConnectClient`` from the same
endpoint, API key and extension headers, with ``max_retries=0`` and pages not accumulated, so that
the gateway's single retry layer (backoff, 429 ``Retry-After``, ambiguous outcomes) is the only one.
Headers that name one task (task id, trace parent) are left out: the client outlives the task.

Failure modes: a configuration problem raises :class:`ConfigError` (nothing is cached, the next
task tries again), :class:`~processor.eaas.variables.NotConfigured` when no product is configured;
an unreachable journal or a schema that needs ``cancel-processor journal migrate`` raises
:class:`~processor.journal.base.JournalError` from the build, also uncached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connect.client import ConnectClient

from processor.config.schema import Config, ConfigError
from processor.daemon.runtime import Runtime, assemble, gateway_settings
from processor.eaas.variables import (
    check_deployable,
    config_from_variables,
    effective,
    export_adapter_secrets,
)
from processor.marketplace import ConnectGateway
from processor.observe import Metrics, register_secret

__all__ = ["RuntimeCache", "build_eaas_runtime", "gateway_client", "fingerprint"]

# Headers connect-extension-runner sets for one task only.
_PER_TASK_HEADERS = frozenset({"EAAS_TASK_ID", "EAAS_TASK_TYPE", "ext-traceparent"})

Builder = Callable[[Mapping[str, Any], ConnectClient], Runtime]


def gateway_client(client: ConnectClient, config: Config) -> ConnectClient:
    """A ConnectClient for the gateway: ``client``'s endpoint, key and extension headers, no retries
    of its own, our timeouts and page size, and our User-Agent after the runner's."""
    settings = gateway_settings(config, client.api_key)
    headers = {
        k: v for k, v in (client.default_headers or {}).items() if k not in _PER_TASK_HEADERS
    }
    runner_agent = headers.get("User-Agent")
    headers["User-Agent"] = (
        f"{runner_agent} {settings.user_agent}" if runner_agent else settings.user_agent
    )
    return ConnectClient(
        client.api_key,
        endpoint=client.endpoint,
        use_specs=False,
        max_retries=0,  # the gateway owns retries (processor.marketplace.retry)
        timeout=(settings.timeout_connect, settings.timeout_read),
        resourceset_append=False,
        default_limit=settings.page_size,
        default_headers=headers,
    )


def build_eaas_runtime(variables: Mapping[str, Any], client: ConnectClient) -> Runtime:
    """Config from the variables, then journal, adapters, gateway and engine, by the one
    wiring (:func:`~processor.daemon.runtime.assemble`), reaching Connect with ``client``'s
    credentials."""
    config = config_from_variables(variables)
    check_deployable(config, variables)
    if not client.api_key:
        raise ConfigError(
            config.source, "", "the runner gave the task a Connect client without an API key"
        )
    register_secret(
        client.api_key
    )  # logs go through the runner's logger (the application routes them)
    export_adapter_secrets(config, variables)

    def gateway(metrics: Metrics) -> ConnectGateway:
        settings = dataclasses.replace(
            gateway_settings(config, client.api_key), endpoint=client.endpoint
        )
        return ConnectGateway(
            settings,
            client=gateway_client(client, config),
            on_retry=metrics.on_retry,
            on_call=metrics.on_connect_call,
        )

    return assemble(config, gateway, url_as_config_error=True)


def fingerprint(variables: Mapping[str, Any], client: ConnectClient) -> str:
    """What identifies an installation configuration (a digest: the key is not kept in memory
    twice)."""
    material = json.dumps([sorted(effective(variables).items()), client.endpoint, client.api_key])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass
class _Entry:
    runtime: Runtime
    users: int = 0
    retired: bool = False


class RuntimeCache:
    """Runtimes by :func:`fingerprint`, shared by concurrent tasks (thread-safe)."""

    def __init__(self, build: Builder = build_eaas_runtime, size: int = 4) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._build = build
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self, variables: Mapping[str, Any], client: ConnectClient) -> Iterator[Runtime]:
        """The runtime for this configuration, built on first use; kept open while in use."""
        key = fingerprint(variables, client)
        retired: list[Runtime] = []
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                # Built under the lock: the first tasks after a start (or a change of variables)
                # wait for one build instead of each opening a pool of their own.
                entry = _Entry(self._build(variables, client))
                self._entries[key] = entry
                retired = self._evict()
            self._entries.move_to_end(key)
            entry.users += 1
        for runtime in retired:
            runtime.close()
        try:
            yield entry.runtime
        finally:
            with self._lock:
                entry.users -= 1
                close = entry.retired and entry.users == 0
            if close:
                entry.runtime.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        """Close every runtime nobody is using now, and the others when their tasks end."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            idle = []
            for entry in entries:
                entry.retired = True
                if entry.users == 0:
                    idle.append(entry.runtime)
        for runtime in idle:
            runtime.close()

    def _evict(self) -> list[Runtime]:
        idle = []
        while len(self._entries) > self._size:
            _, oldest = self._entries.popitem(last=False)
            oldest.retired = True
            if oldest.users == 0:
                idle.append(oldest.runtime)
        return idle
