"""The environment's part of the configuration: ``CANCEL_PROCESSOR_<SECTION>__<KEY>`` overrides
(``__`` separates nesting levels, values parsed as YAML scalars) and ``CONNECT_ENDPOINT``, merged
over the file; and which variable set a key, so that a mistake in one (a mistyped key, a bad value)
is blamed on the variable, not on the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["ENV_PREFIX", "env_overrides", "merge", "blamed"]

ENV_PREFIX = "CANCEL_PROCESSOR_"


def env_overrides(
    environ: Mapping[str, str], origins: dict[tuple[str, ...], str] | None = None
) -> dict[str, Any]:
    """The overrides from the environment; ``origins`` receives each key path's variable name, so
    an error in a value (or a mistyped name) blames the variable, not the file."""
    out: dict[str, Any] = {}
    origins = {} if origins is None else origins
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        origins[tuple(path)] = name
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            node[path[-1]] = raw
    if "CONNECT_ENDPOINT" in environ:
        out.setdefault("connect", {})["endpoint"] = environ["CONNECT_ENDPOINT"]
        origins[("connect", "endpoint")] = "CONNECT_ENDPOINT"
    return out


def blamed(loc: str, msg: str, origins: Mapping[tuple[str, ...], str]) -> str | None:
    """The environment variable behind the key ``loc`` (or named in the message), if one set it."""
    path = tuple(loc.split(".")) if loc else ()
    ordered = sorted(origins.items(), key=lambda kv: -len(kv[0]))
    for keys, name in ordered:
        if path[: len(keys)] == keys or (
            len(path) < len(keys)
            and keys[: len(path)] == path
            and ".".join(keys[len(path) :]) in msg
        ):
            return name
    for keys, name in ordered:  # a key missing next to one the variable set (adapters.x.type)
        if path and len(keys) >= len(path) and keys[: len(path) - 1] == path[:-1]:
            return name
    return None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
