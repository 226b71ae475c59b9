"""What a vendor's answers mean: the ``outcomes`` tables of the ``http`` adapter, and the configured
operations (terminate, suspend, purge, the status read) that carry them.

A status code is looked up exactly, then by range (``4xx``); an entry is an outcome name or a list
of rules matched against the JSON body, first match wins. An outcome that ends a request
(``already_gone``, ``refused``, ``success`` outside 2xx) needs a body condition: a status code
alone is not evidence, and that is checked when the options are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processor.adapters.base import AdapterError, SubscriptionStatus
from processor.adapters.http_templates import Template, body_template
from processor.adapters.http_values import Options, bad, lookup, scalar

__all__ = [
    "DEFAULT_OUTCOMES",
    "DEFAULT_TABLE",
    "EVIDENCE_OUTCOMES",
    "METHODS",
    "OUTCOME_NAMES",
    "Operation",
    "Rule",
    "Table",
    "operation",
    "outcome_table",
]

# fmt: off
OUTCOME_NAMES = ("success", "already_gone", "refused", "retry_later", "ambiguous", "failed")
METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
# Written as options, so that the defaults pass the same validation as what an operator writes.
# Safe for a vendor we have never seen: no status code alone ends a request. A 404 may be a
# mistyped path, a 403 a token without the right scope, a 400 or 422 a validation bug on either
# side; each is a definite error (counted toward processing.max_attempts, then parked by default).
# "Gone" and "refused" need a body the operator names under outcomes (see the mock vendor's map in
# cancel_sandbox.vendor.outcomes and config/processor.example.yaml), or a status read.
DEFAULT_OUTCOMES: dict[str, Any] = {
    "1xx": "failed",
    "2xx": "success",
    "3xx": "failed",  # redirects are not followed: a moved API is a configuration error
    "429": "retry_later",
    "4xx": "failed",
    "503": "retry_later",
    "5xx": "ambiguous",  # 500, 502, 504: the vendor (or a proxy in front of it) may have acted
}
# Outcomes the customer sees (approve after "gone", refuse): never from a status code alone.
EVIDENCE_OUTCOMES = ("already_gone", "refused")
_SUCCESS_VALUES = {"terminate": ["terminated", "purged"], "suspend": ["suspended"],
                   "purge": ["purged"]}
# fmt: on


@dataclass(frozen=True, slots=True)
class Rule:
    """``outcome`` when each ``when`` key path of the JSON body holds one of its values."""

    outcome: str
    when: tuple[tuple[str, frozenset[str | None]], ...] = ()

    def matches(self, body: Any) -> bool:
        return all(scalar(lookup(body, path)) in values for path, values in self.when)


Table = Mapping[str, tuple[Rule, ...]]


def outcome_table(raw: Any, key: str, base: Table) -> dict[str, tuple[Rule, ...]]:
    """``base`` with the entries of ``raw`` replacing it code by code.

    A rule that ends a request needs a body condition: ``already_gone`` and ``refused`` always,
    ``success`` outside 2xx. A bare ``"404": already_gone`` is how a mistyped path approved every
    cancellation; it is refused at start-up, naming the key.
    """
    table = dict(base)
    for code, spec in Options(raw, key + ".").data.items():
        code = str(code).lower()
        if not re.fullmatch(r"[1-5]([0-9]{2}|xx)", code):
            raise bad(f"{key}.{code}", "a status code like 404 or a range like 4xx", code)
        items = spec if isinstance(spec, list) else [spec]
        table[code] = tuple(_rule(item, f"{key}.{code}[{i}]") for i, item in enumerate(items))
        for i, rule in enumerate(table[code]):
            final = rule.outcome in EVIDENCE_OUTCOMES or (
                rule.outcome == "success" and code[0] != "2"
            )
            # null matches a body without the field, an empty list nothing: neither is evidence
            if final and (not rule.when or any(None in v or not v for _, v in rule.when)):
                raise AdapterError(
                    f"option '{key}.{code}[{i}]': {rule.outcome} from a status code alone is not "
                    f"evidence; add when: {{<body field>: <value the vendor sends>}}"
                )
    return table


def _rule(item: Any, key: str) -> Rule:
    o = Options({"outcome": item} if isinstance(item, str) else item, key + ".")
    outcome = o.choice("outcome", OUTCOME_NAMES)
    when = []
    for path, values in Options(o.get("when", {}), key + ".when.").data.items():
        listed = values if isinstance(values, list) else [values]
        when.append((str(path), frozenset(scalar(v) for v in listed)))
    o.done()
    return Rule(outcome, tuple(when))


@dataclass(frozen=True, slots=True)
class Operation:
    """One configured vendor call: terminate, suspend, purge or the status read."""

    name: str
    method: str
    path: Template
    body: Any  # a body template, or None: no body
    outcomes: Table
    key_path: str | None  # success_field of an action (None: any 2xx), the status field of a read
    accept: frozenset[str | None] = frozenset()  # success_values
    statuses: Mapping[str, SubscriptionStatus] | None = None  # set for the status read only

    def outcome_for(self, code: int, body: Any) -> str:
        for key in (str(code), f"{code // 100}xx"):
            for rule in self.outcomes.get(key, ()):
                if rule.matches(body):
                    return rule.outcome
        return "ambiguous" if code >= 500 else "failed"


def operation(name: str, raw: Any, body: Any, outcomes: Table) -> Operation:
    o = Options({} if raw is True else raw, name + ".")
    method = o.choice("method", METHODS, "GET" if name == "status" else "POST", upper=True)
    suffix = "" if name == "status" else "/" + name
    path = Template(o.text("path", "/v1/subscriptions/{subscription_id}" + suffix), o.key("path"))
    if not path.text.startswith("/"):
        raise bad(o.key("path"), "a path starting with '/'", path.text)
    if "body" in o.data:
        body = body_template(o.get("body", None), o.key("body"))
    table = outcome_table(o.get("outcomes", {}), o.key("outcomes"), outcomes)
    if name == "status":
        statuses: dict[str, SubscriptionStatus] = {
            s.value: s for s in SubscriptionStatus if s is not SubscriptionStatus.UNKNOWN
        }
        for vendor, ours in Options(o.get("values", {}), o.key("values.")).data.items():
            try:
                statuses[str(vendor)] = SubscriptionStatus(ours)
            except ValueError:
                raise bad(o.key(f"values.{vendor}"), "a subscription status", ours) from None
        op = Operation(
            name, method, path, None, table, o.text("field", "status"), statuses=statuses
        )
    else:
        o.get("success_field", None)  # marks it read: an explicit null turns the check off
        key_path = o.data.get("success_field", "status")
        if key_path is not None and not (isinstance(key_path, str) and key_path):
            raise bad(o.key("success_field"), "a key path or null", key_path)
        values = o.get("success_values", _SUCCESS_VALUES[name])
        accept = frozenset(scalar(v) for v in (values if isinstance(values, list) else [values]))
        op = Operation(
            name, method, path, None if method == "GET" else body, table, key_path, accept
        )
    o.done()
    return op


# Built last: it needs the helpers above, and validates the defaults like any configuration.
DEFAULT_TABLE = outcome_table(DEFAULT_OUTCOMES, "outcomes", {})
