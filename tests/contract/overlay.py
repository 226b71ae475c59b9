"""The overlay on Connect's OpenAPI document: where the document disagrees with what Connect sends.

The document (../shared/reference/connect-requests.openapi.yml, Connect API 37.0) is right about
most things and wrong about a few that the public fixtures prove: each such disagreement is one
:class:`Omission` below, with a comment saying what the document says, what Connect really sends,
and the evidence. Both contract tests apply exactly this list (openapi-core per exchange in
``test_openapi_contract.py``, schemathesis' fuzzing in ``test_schemathesis_contract.py``), and
every patch must still change the document and still be needed by at least one real exchange,
so the list cannot rot into a blanket loosening. The checks themselves are never relaxed.

``additions.yml`` adds the operations the subset lacks but a processor's client reaches
(``/subscriptions``, ``/marketplaces``, ``/assets``, ``/products/{id}``), in the document's own
style; they are additions, not patches, so they are applied first and patched like the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KNOWN_OMISSIONS", "Omission", "load_document", "patched"]

ADDITIONS = Path(__file__).resolve().parent / "additions.yml"

REQUEST_STATUSES = ["draft", "tiers_setup", "pending", "inquiring", "approved", "failed"]
ASSET_STATUSES = ["active", "new", "processing", "rejected", "suspended", "terminated"]


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in the document, depth first (schemas are inlined, not referenced)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def _properties(spec: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    for schema in _schemas(spec):
        props = schema.get("properties")
        if isinstance(props, dict) and isinstance(props.get(name), dict):
            yield props


def _extend_enum(spec: dict[str, Any], enum: list[str], extra: list[Any]) -> int:
    changed = 0
    for schema in _schemas(spec):
        if schema.get("enum") == enum:
            schema["enum"] = enum + extra
            changed += 1
    return changed


def _nullable(spec: dict[str, Any], name: str) -> int:
    changed = 0
    for props in _properties(spec, name):
        if "nullable" not in props[name]:
            props[name]["nullable"] = True
            changed += 1
    return changed


def _assignee_object(spec: dict[str, Any]) -> int:
    changed = 0
    for props in _properties(spec, "assignee"):
        if props["assignee"].get("type") == "string":
            props["assignee"] = {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "name": {"type": "string"},
                            "email": {"type": "string"},
                        },
                    },
                ]
            }
            changed += 1
    return changed


def _choices_objects(spec: dict[str, Any]) -> int:
    changed = 0
    for props in _properties(spec, "value_choices"):
        if props["value_choices"].get("items", {}).get("type") == "string":
            props["value_choices"]["items"] = {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "value": {"type": "string"},
                    "default": {"type": "boolean"},
                },
            }
            changed += 1
    return changed


def _asset_detail(spec: dict[str, Any]) -> dict[str, Any]:
    """The subscription schema of ``GET /assets/{id}`` (``dp.Subscription``)."""
    ref = spec["paths"]["/assets/{id}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]["$ref"]
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _quantity_strings(spec: dict[str, Any]) -> int:
    quantity = _asset_detail(spec)["properties"]["items"]["items"]["properties"]["quantity"]
    if quantity.get("type") != "number":
        return 0
    quantity["type"] = "string"
    return 1


def _params_not_nested(spec: dict[str, Any]) -> int:
    params = _asset_detail(spec)["properties"]["params"]
    if params["items"].get("type") != "array":
        return 0
    params["items"] = params["items"]["items"]
    return 1


def _nullable_enums(spec: dict[str, Any]) -> int:
    changed = 0
    for schema in _schemas(spec):
        if (
            schema.get("nullable")
            and isinstance(schema.get("enum"), list)
            and None not in schema["enum"]
        ):
            schema["enum"] = schema["enum"] + [None]
            changed += 1
    return changed


def _string_period_nullable(spec: dict[str, Any]) -> int:
    changed = 0
    for props in _properties(spec, "period"):
        if props["period"].get("type") == "string" and "nullable" not in props["period"]:
            props["period"]["nullable"] = True
            changed += 1
    return changed


PARAM_TYPES = [
    "text", "dropdown", "password", "email", "checkbox", "subdomain", "domain", "phone", "url",
    "choice",
]  # fmt: skip


def _not_required(spec: dict[str, Any], schema: str, names: list[str]) -> int:
    required = spec["components"]["schemas"][schema].get("required", [])
    missing = [name for name in names if name in required]
    spec["components"]["schemas"][schema]["required"] = [n for n in required if n not in names]
    return len(missing)


def _checkbox_structured_values(spec: dict[str, Any]) -> int:
    changed = 0
    for props in _properties(spec, "structured_value"):
        options = props["structured_value"].get("oneOf")
        checkbox = {"type": "object", "additionalProperties": {"type": "boolean"}}
        if isinstance(options, list) and checkbox not in options:
            options.append(checkbox)
            changed += 1
    return changed


_LOCALE = r"^([A-Za-z]{2,3}(-[A-Za-z]{2,4})?|TRN-[0-9]{4}-[0-9]{4}-[0-9]{4})$"


def _header_schema_refs(spec: dict[str, Any]) -> int:
    changed = 0
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                ref = (parameter.get("schema") or {}).get("$ref", "")
                if ref.startswith("#/components/headers/"):
                    parameter["schema"] = {"type": "string", "pattern": _LOCALE}
                    changed += 1
    return changed


def _error_responses(spec: dict[str, Any]) -> int:
    changed = 0
    # Inlined, not a $ref: schemathesis' content-type check does not follow response references.
    error = spec["components"]["responses"]["dp.create_400"]
    for path, operations in spec["paths"].items():
        if path.startswith("/devops"):  # not served by the mock
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in ("400", "404"):
                if code not in operation["responses"]:
                    operation["responses"][code] = copy.deepcopy(error)
                    changed += 1
    return changed


@dataclass(frozen=True)
class Omission:
    name: str
    evidence: str
    patch: Callable[[dict[str, Any]], int]
    # True when only generated requests meet it (the document describes inputs wrongly): the
    # openapi-core exchanges cannot show it is needed; that it still applies is checked.
    fuzz_only: bool = False


KNOWN_OMISSIONS = [
    # The document types Connect-Localization's schema as a $ref to a *header object*, so a
    # generator sends any bytes (control characters the HTTP server refuses before any app sees
    # them); the same description lists what Connect accepts: a locale code or a TRN-... id.
    Omission(
        "Connect-Localization parameter schema is a header object",
        "the document's own description of accepted values (GET /requests/{id}/render)",
        _header_schema_refs,
        fuzz_only=True,
    ),
    # Request status enums stop at failed; cancels also go scheduled -> revoking -> revoked.
    Omission(
        "request statuses scheduled, revoking, revoked",
        "connect-workflows; the document's own event definitions list them for cancels",
        lambda s: _extend_enum(s, REQUEST_STATUSES, ["scheduled", "revoking", "revoked"]),
    ),
    # A subscription with a pending cancel is 'terminating', absent from the asset status enum.
    Omission(
        "subscription status terminating inside a request",
        "connect-api.md: a cancel's subscription is terminating while it is pending",
        lambda s: _extend_enum(s, ASSET_STATUSES, ["terminating"]),
    ),
    # effective_date is typed a non-null string; an unapproved request has null.
    Omission(
        "effective_date is null until approval",
        "fixture othercodes request_asset.json",
        lambda s: _nullable(s, "effective_date"),
    ),
    # previous_approved_request is typed a non-null object; a first request has null.
    Omission(
        "previous_approved_request is null on a first request",
        "fixture othercodes request_asset.json",
        lambda s: _nullable(s, "previous_approved_request"),
    ),
    # assignee is typed a string; Connect sends '' when unassigned and a user object otherwise.
    Omission(
        "assignee is '' or an object",
        "fixture connect-php-sdk fulfillment_request.json",
        _assignee_object,
    ),
    # value_choices is typed a list of strings; Connect sends {label, value[, default]} objects.
    Omission(
        "value_choices are {label, value} objects",
        "fixture othercodes request_asset.json",
        _choices_objects,
    ),
    # quantity is typed a number on /assets/{id}; Connect sends strings ('unlimited' for PPU).
    Omission(
        "item quantities are strings ('unlimited')",
        "fixture connect-extension-mulesoft requests.json",
        _quantity_strings,
    ),
    # /assets/{id} types params as a list of lists; it is a list of parameter objects.
    Omission(
        "/assets/{id} params is a list of objects, not of lists",
        "every fixture's asset.params",
        _params_not_nested,
    ),
    # nullable enums without null in the enum (template type): OpenAPI 3.0 needs null listed.
    Omission(
        "nullable enums (template type) allow null",
        "OpenAPI 3.0: nullable needs null in the enum",
        _nullable_enums,
    ),
    # Items of one-time (and some PPU) products carry "period": null; the document says string.
    Omission(
        "item period is null",
        "fixture connect-extension-mulesoft requests.json (asset.items[0].period)",
        _string_period_nullable,
    ),
    # Parameter types: the enum lacks "address" (and Connect has more: object, heading...).
    Omission(
        "parameter type address",
        "fixture connect-extension-mulesoft requests.json (delivery_add)",
        lambda s: _extend_enum(s, PARAM_TYPES, ["address"]),
    ),
    # A checkbox parameter's structured_value maps each choice to true/false; the document's
    # oneOf knows only the address and phone shapes.
    Omission(
        "checkbox structured_value",
        "fixture othercodes request_asset.json (CATEGORIES)",
        _checkbox_structured_values,
    ),
    # A 2019 subscription has neither contract nor marketplace; the document requires both.
    Omission(
        "subscription contract and marketplace may be absent",
        "fixture processor-acronis-customer-centric request.cancel.http.json (asset)",
        lambda s: _not_required(s, "dp.Subscription", ["contract", "marketplace"]),
    ),
    # The connection type enum lacks 'preview', which every preview fixture carries.
    Omission(
        "connection type preview",
        "fixtures: preview connections CT-0000-0000-0000",
        lambda s: _extend_enum(s, ["test", "production"], ["preview"]),
    ),
    # Most operations declare no 400/404 although every refusal is {error_code, errors}.
    Omission(
        "400/404 error bodies of actions and reads are undeclared",
        "connect-api.md: every error is {error_code, errors}",
        _error_responses,
    ),
]


def _load_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads it 10x faster
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # type: ignore[no-any-return]


def load_document(shared_reference: Path) -> dict[str, Any]:
    """Connect's document with the additions merged in (not yet patched)."""
    document = _load_yaml(shared_reference / "connect-requests.openapi.yml")
    additions = _load_yaml(ADDITIONS)
    for path, operations in additions["paths"].items():
        document["paths"].setdefault(path, {}).update(operations)
    document["components"]["schemas"].update(additions["components"]["schemas"])
    return document


def patched(document: dict[str, Any], server_url: str, skip: str | None = None) -> dict[str, Any]:
    """A copy with every patch applied (but ``skip``), served from ``server_url``."""
    out = copy.deepcopy(document)
    out["servers"] = [{"url": server_url + "/public/v1"}]
    for omission in KNOWN_OMISSIONS:
        if omission.name != skip:
            assert omission.patch(out) > 0, f"patch {omission.name!r} no longer applies"
    return out
