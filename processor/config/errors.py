"""How a configuration error is worded: the key and what was wrong, with no secret in it.

A value echoed in an error may be a secret put in the wrong place (an API key as a number, a
password in a URL): :func:`hide` masks URL passwords and the values of the variables the
configuration names as secrets (:func:`secret_values`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from processor.config.env import ENV_PREFIX

__all__ = ["describe", "hide", "secret_values"]


_URL_PASSWORD = re.compile(r"(://[^/@:\s'\"]*:)[^@\s'\"]*@")


def secret_values(data: Any, environ: Mapping[str, str]) -> list[str]:
    """The secrets this configuration names (by environment variable), to keep out of its errors."""
    names = {"CONNECT_API_KEY", ENV_PREFIX + "STATUS_TOKEN"}
    section = data if isinstance(data, Mapping) else {}
    for path in (("connect", "api_key_env"), ("http", "token_env")):
        node: Any = section
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, str):
            names.add(node)
    adapters = section.get("adapters")
    for spec in adapters.values() if isinstance(adapters, Mapping) else ():
        options = spec.get("options") if isinstance(spec, Mapping) else None
        auth = options.get("auth") if isinstance(options, Mapping) else None
        if isinstance(auth, Mapping) and isinstance(auth.get("env"), str):
            names.add(auth["env"])
    values = [environ[name] for name in names if len(environ.get(name) or "") >= 6]
    # The secret half of a Connect key ("ApiKey SU-...:secret") on its own, too.
    values += [v.rsplit(":", 1)[1] for v in values if ":" in v and len(v.rsplit(":", 1)[1]) >= 6]
    return sorted(values, key=len, reverse=True)


def hide(text: str, secrets: list[str]) -> str:
    """``text`` without URL passwords and without the configured secrets: a value echoed in a
    configuration error may be a secret put in the wrong place."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def describe(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    msg = str(error.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if error.get("type") == "extra_forbidden":
        msg = "unknown key (see config/processor.example.yaml for the accepted keys)"
    elif (
        "input" in error and error.get("type") != "missing" and not isinstance(error["input"], dict)
    ):
        msg += f" (got {error['input']!r})"
    return loc, msg
