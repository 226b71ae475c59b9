"""Finding and constructing vendor adapters by name.

An adapter is named in the configuration either by an entry point of the group
``processor.adapters`` (the built-ins ``http`` and ``noop``, and any installed plug-in) or by
``package.module:ClassName`` for code that is importable but not packaged.

The construction contract: an adapter class is called as ``Class(options)`` with the adapter's
``options`` mapping from the configuration (a private copy) and validates them itself, raising
:class:`AdapterError` that names the option key and what was expected. After construction the
registry sets ``adapter.name`` to the name the configuration gives the adapter, because the engine
keys circuit breakers and metrics by it; ``name`` must therefore be a writable attribute. An
adapter without ``check_call`` is given the default subscription id rule
(:func:`~processor.adapters.base.default_check_call`).

Every failure here is a start-up error: an unknown name, an import that fails, a constructor that
rejects its options or raises anything else, or an object that does not satisfy
:class:`VendorAdapter` all raise :class:`AdapterError` naming the adapter. Nothing here talks to a
vendor.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from typing import Any

from processor.adapters.base import AdapterError, Idempotency, VendorAdapter, with_default_check

__all__ = ["ENTRY_POINT_GROUP", "available_adapters", "load_adapter"]

ENTRY_POINT_GROUP = "processor.adapters"


def available_adapters() -> list[str]:
    """Names of the installed adapters (entry points of :data:`ENTRY_POINT_GROUP`), sorted."""
    return sorted(_entry_points())


def load_adapter(
    spec: str, options: Mapping[str, Any], *, name: str | None = None
) -> VendorAdapter:
    """Import, construct and check the adapter ``spec`` (entry-point name or ``module:Class``).

    ``name`` is the adapter's name in the configuration; it becomes ``adapter.name``. Raises
    :class:`AdapterError` for every failure, with a message fit for the operator.
    """
    label = f"adapter '{name}' ({spec})" if name and name != spec else f"adapter '{spec}'"
    if not isinstance(options, Mapping):
        raise AdapterError(f"{label}: options must be a mapping, got {type(options).__name__}")
    cls = _resolve(spec, label)
    if not callable(cls):
        raise AdapterError(f"{label}: {spec} is a {type(cls).__name__}, not a class")
    try:
        adapter = cls(dict(options))
    except AdapterError as exc:
        raise AdapterError(f"{label}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - third-party constructors may raise anything
        raise AdapterError(f"{label}: construction failed: {type(exc).__name__}: {exc}") from exc
    if name:
        try:
            adapter.name = name
        except AttributeError:
            raise AdapterError(f"{label}: 'name' must be a writable attribute") from None
    _check(adapter, label)
    return with_default_check(adapter)  # type: ignore[no-any-return]


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    # An editable install can list a distribution twice; the first entry for a name wins.
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry)
    return found


def _resolve(spec: str, label: str) -> Any:
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise AdapterError(f"{label}: expected 'package.module:ClassName', got '{spec}'")
    else:
        entry = _entry_points().get(spec)
        if entry is None:
            known = ", ".join(available_adapters()) or "none installed"
            raise AdapterError(f"unknown adapter '{spec}'; known: {known}; or use 'module:Class'")
        module_name, _, attribute = entry.value.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - an import runs arbitrary module code
        raise AdapterError(
            f"{label}: cannot import '{module_name}': {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AdapterError(f"{label}: '{module_name}' has no attribute '{attribute}'") from None
    return target


def _check(adapter: Any, label: str) -> None:
    """The protocol, checked with messages that say what is missing."""
    if not callable(getattr(adapter, "terminate", None)):
        raise AdapterError(f"{label}: {type(adapter).__name__} has no terminate(call) method")
    if not isinstance(getattr(adapter, "name", None), str) or not adapter.name:
        raise AdapterError(f"{label}: {type(adapter).__name__} has no 'name' string")
    if not isinstance(idempotency := getattr(adapter, "idempotency", None), Idempotency):
        raise AdapterError(
            f"{label}: {type(adapter).__name__}.idempotency must be an Idempotency member "
            f"({', '.join(i.value for i in Idempotency)}), got {idempotency!r}"
        )
