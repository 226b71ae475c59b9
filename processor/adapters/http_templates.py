"""Templates in the ``http`` adapter's options: paths and body strings naming request fields in
braces (:data:`TEMPLATE_FIELDS` and ``params.<parameter id>``), checked once at start-up, rendered
per call. An unknown field, a format spec or a conversion is a start-up error.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from processor.adapters.base import AdapterError
from processor.adapters.http_values import bad

__all__ = ["DEFAULT_BODY", "TEMPLATE_FIELDS", "Template", "body_template", "render_body"]

# fmt: off
TEMPLATE_FIELDS = (
    "subscription_id", "request_id", "asset_id", "product_id", "marketplace_id", "environment",
    "customer_id", "external_id", "idempotency_key", "reason_code", "reason_comment",
)
DEFAULT_BODY = {"request_id": "{request_id}", "reason_code": "{reason_code}",
                "comment": "{reason_comment}"}
# fmt: on


class Template:
    """``"/v1/subscriptions/{subscription_id}"``: literal text and field names, checked once."""

    def __init__(self, text: str, key: str) -> None:
        self.text, self.parts = text, list[tuple[str, str | None]]()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise AdapterError(f"option '{key}': bad template {text!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (spec or conversion):
                raise AdapterError(
                    f"option '{key}': '{{{name}}}' takes no format spec or conversion"
                )
            if (
                name is not None
                and name not in TEMPLATE_FIELDS
                and not re.fullmatch(r"params\.[^.\[\]]+", name)
            ):
                known = ", ".join(TEMPLATE_FIELDS)
                raise AdapterError(
                    f"option '{key}': unknown field '{{{name}}}'; known: {known}, params.<id>"
                )
            self.parts.append((literal, name))

    def render(self, fields: Mapping[str, str], escape: Callable[[str], str] = str) -> str:
        return "".join(
            text + (escape(fields.get(name, "")) if name else "") for text, name in self.parts
        )

    def render_path(self, fields: Mapping[str, str], segment: Callable[[str, str], str]) -> str:
        """The URL: each field before a ``?`` through ``segment(name, value)`` (checked for its
        kind and encoded as one path segment, :func:`processor.urls.segment`), the ones after it
        percent-encoded as query values."""
        out, query = [], False
        for text, name in self.parts:
            query = query or "?" in text
            out.append(text)
            if name is not None:
                value = fields.get(name, "")
                out.append(quote(value, safe="") if query else segment(name, value))
        return "".join(out)

    def fields(self) -> list[str]:
        return [name for _, name in self.parts if name is not None]

    def path_fields(self) -> list[str]:
        """The fields before a ``?``: the ones whose value could change which resource is called."""
        found: list[str] = []
        for literal, name in self.parts:
            if "?" in literal:
                break
            if name is not None:
                found.append(name)
        return found


def body_template(value: Any, key: str) -> Any:
    """A JSON body whose strings may be templates; nested objects and arrays are allowed."""
    if isinstance(value, str):
        return Template(value, key)
    if isinstance(value, Mapping):
        return {str(k): body_template(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [body_template(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise bad(key, "JSON values", value)


def render_body(template: Any, fields: Mapping[str, str]) -> Any:
    """The JSON body for one call; object keys whose value renders empty are left out."""
    if isinstance(template, Template):
        return template.render(fields)
    if isinstance(template, dict):
        rendered = {k: render_body(v, fields) for k, v in template.items()}
        return {k: v for k, v in rendered.items() if v != ""}  # no comment is better than ""
    if isinstance(template, list):
        return [render_body(v, fields) for v in template]
    return template
