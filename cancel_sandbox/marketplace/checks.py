"""Small validators for hand-written seed files: each failure names the entry and the key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["SeedError", "mapping", "sequence", "text", "choice"]

_REQUIRED: Any = object()


class SeedError(ValueError):
    """The seed file is unreadable or says something impossible; the message says where."""


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SeedError(f"{where}: a mapping is required, got {type(value).__name__}")
    return value


def sequence(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> list[Any]:
    value = data.get(key)
    if value is None:
        if default is _REQUIRED:
            raise SeedError(f"{_path(where, key)}: required")
        return list(default)
    if not isinstance(value, list):
        raise SeedError(f"{_path(where, key)}: a list is required, got {type(value).__name__}")
    return value


def text(data: dict[str, Any], key: str, where: str, default: Any = _REQUIRED) -> Any:
    value = data.get(key)
    if value is None or value == "":
        if default is _REQUIRED:
            raise SeedError(f"{_path(where, key)}: required")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SeedError(f"{_path(where, key)}: a string is required, got {type(value).__name__}")
    return str(value)


def choice(
    data: dict[str, Any], key: str, where: str, options: Iterable[Any], default: Any = _REQUIRED
) -> Any:
    options = tuple(options)
    value = data.get(key, default)
    if value is _REQUIRED:
        raise SeedError(f"{_path(where, key)}: required (one of {', '.join(map(str, options))})")
    if value not in options:
        raise SeedError(
            f"{_path(where, key)}: {value!r} is not one of {', '.join(map(str, options))}"
        )
    return value
