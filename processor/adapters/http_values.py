"""Reading the ``http`` adapter's options: a mapping that rejects the keys nobody read, the checks
every option shares (URLs, header names), and the JSON helpers the outcome rules use.

Errors name the option's dotted key and what was expected; values are echoed shortened, with
control characters blanked, and a URL holding credentials is never echoed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from processor.adapters.base import AdapterError

__all__ = [
    "CONTROL",
    "MISSING",
    "Options",
    "bad",
    "checked_url",
    "header_name",
    "lookup",
    "scalar",
    "secret_from",
    "short",
]

MISSING: Any = object()
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name


class Options:
    """One mapping of options; remembers which keys were read so that the rest can be rejected."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise bad(path.rstrip(".") or "options", "a mapping", data)
        self.data, self.path, self._read = data, path, set[str]()

    def key(self, name: str) -> str:
        return self.path + name

    def get(self, name: str, default: Any = MISSING) -> Any:
        self._read.add(name)
        if self.data.get(name) is not None:
            return self.data[name]
        if default is MISSING:
            raise AdapterError(f"option '{self.key(name)}': required")
        return default

    def text(self, name: str, default: Any = MISSING) -> Any:
        value = self.get(name, default)
        if value is not default and (not isinstance(value, str) or not value.strip()):
            raise bad(self.key(name), "a non-empty string", value)
        return value

    def choice(
        self, name: str, choices: tuple[str, ...], default: Any = MISSING, upper: bool = False
    ) -> str:
        value = self.get(name, default)
        normal = value.upper() if upper and isinstance(value, str) else value
        if normal not in choices:
            raise bad(self.key(name), "one of " + ", ".join(choices), value)
        return str(normal)

    def seconds(self, name: str, default: float) -> float:
        value = self.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < math.inf
        ):
            raise bad(self.key(name), "a positive number of seconds", value)
        return float(value)

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self._read)
        if unknown:
            known = ", ".join(sorted(self._read))
            raise AdapterError(
                f"option '{self.key(unknown[0])}': unknown option; expected one of {known}"
            )


def bad(key: str, expected: str, got: Any) -> AdapterError:
    return AdapterError(f"option '{key}': expected {expected}, got {short(got, 60)}")


def checked_url(text: str, key: str) -> str:
    try:
        parts = urlsplit(text)
        has_credentials, host = bool(parts.username or parts.password), parts.hostname
    except ValueError:
        raise AdapterError(f"option '{key}': not a valid URL") from None
    if has_credentials:  # checked first, and the URL is not echoed: it holds a secret
        raise AdapterError(
            f"option '{key}': credentials in the URL are not allowed; use auth (env or file)"
        )
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise bad(key, "a http or https URL without query or fragment", text)
    return text


def header_name(name: str, key: str) -> str:
    if not TOKEN.fullmatch(name):
        raise bad(key, "an HTTP header name", name)
    return name


def lookup(body: Any, path: str) -> Any:
    """``"error.code"`` in a JSON body; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(body, Mapping):
            return None
        body = body.get(part)
    return body


def scalar(value: Any) -> str | None:
    """A JSON scalar as text to compare (booleans as in JSON); None if absent or structured."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (Mapping, list)):
        return None
    return str(value)


def short(value: Any, limit: int = 80) -> str:
    text = CONTROL.sub(" ", repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def secret_from(env: str | None, path: str | None) -> str:
    """The secret in the environment variable ``env`` or the file ``path`` (``auth.env`` or
    ``auth.file``); errors name where it was looked for, never its value."""
    if env is not None:
        where, secret = (
            f"auth.env': the environment variable {env}",
            os.environ.get(env, "").strip(),
        )
    else:
        where = f"auth.file': the file {path}"
        try:
            with open(str(path), encoding="utf-8") as handle:
                secret = handle.read().strip()
        except (OSError, UnicodeError) as exc:  # never str(exc): a decode error quotes the bytes
            problem = getattr(exc, "strerror", None) or type(exc).__name__
            raise AdapterError(f"option '{where} cannot be read ({problem})") from None
    if not secret:
        raise AdapterError(f"option '{where} is not set or is empty")
    if CONTROL.search(secret):
        raise AdapterError(f"option '{where} holds a control character (a line break?)")
    return secret
