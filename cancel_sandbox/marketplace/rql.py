"""RQL as Connect reads it: lib-rql's grammar, the mock's own evaluation.

The query string is parsed by ``py_rql`` (lib-rql, the library Connect's services use), so what
parses here parses there and the other way round. lib-rql's own evaluator is not used: it knows
neither ordering nor select, resolves dotted paths only through dicts and lets any field through.
Instead the parse tree becomes a small :class:`Node` tree that :func:`compile_filter` turns into a
predicate over the store's records, through a per-collection table of known fields (an unknown field
is a 400, as in Connect, not a silently empty page).

Accepted: ``eq ne gt ge lt le in out like ilike and or not``, ``field=value`` and
``field=op=value``, ``null()`` and ``empty()``, ``ordering(a,-b)``, ``select(a,-b)``, ``limit=``,
``offset=`` and the old ``limit(n[,offset])``; also the django-filter syntax that Connect's
compatibility layer still converts (``field__in=a,b``, ``field__gte=...``; the legacy SDK uses
it). Values are percent-decoded but ``+`` is kept (it is the offset sign in ISO dates that clients
send unencoded). Limits: ``t()`` tuples and ``search=``
are refused with a 400; ``like`` knows only ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import py_rql
from lark import Token, Tree
from py_rql.exceptions import RQLFilterError

from cancel_sandbox.marketplace.legacy import from_django_filter
from cancel_sandbox.marketplace.objects import parse_time
from cancel_sandbox.marketplace.rql_error import RQLError

__all__ = [
    "RQLError",
    "Field",
    "Node",
    "Cmp",
    "And",
    "Or",
    "Not",
    "Query",
    "parse_query",
    "conjuncts",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NULL, EMPTY = "null()", "empty()"
_LIMIT_CALL = re.compile(r"^limit\((\d+)(?:,(\d+))?\)$")


@dataclass(frozen=True, slots=True)
class Field:
    """How to read one filterable field from a record.

    ``kind`` is ``str``, ``time`` (values compare as datetimes) or ``bool``; ``many`` marks a path
    through a list (``asset.params.id``): the getter returns all values and a comparison holds when
    any of them matches (``ne``/``out``: when none of them is excluded).
    """

    get: Callable[[Any], Any]
    kind: str = "str"
    many: bool = False


class Node:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Cmp(Node):
    op: str  # eq ne gt ge lt le in out like ilike
    field: str
    value: Any  # a cast value; a tuple for in/out


@dataclass(frozen=True, slots=True)
class And(Node):
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    child: Node


@dataclass(frozen=True, slots=True)
class Query:
    filter: Node | None
    ordering: tuple[str, ...]  # "created", "-created"
    select: tuple[str, ...]  # "-activation_key", "asset.params"
    limit: int
    offset: int


def conjuncts(node: Node | None) -> list[Node]:
    """The top-level AND terms of a filter (one term when it is not an AND)."""
    if node is None:
        return []
    if isinstance(node, And):
        out: list[Node] = []
        for child in node.children:
            out.extend(conjuncts(child))
        return out
    return [node]


def _split_top_level(raw: str) -> list[str]:
    """Split on ``&`` outside parentheses (``and(a,b)&ordering(x)`` → two segments)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(raw):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "&" and depth == 0:
            parts.append(raw[start:index])
            start = index + 1
    parts.append(raw[start:])
    return [part for part in parts if part]


def _int_param(name: str, text: str) -> int:
    if not text.isdigit():
        raise RQLError(f"{name}: a non-negative integer is required, got {text!r}.")
    return int(text)


def parse_query(
    raw: str | bytes,
    *,
    fields: Mapping[str, Field],
    selectable: Iterable[str] = (),
    default_limit: int = DEFAULT_LIMIT,
    max_limit: int = MAX_LIMIT,
) -> Query:
    """Parse a raw (still percent-encoded) query string into a :class:`Query` over ``fields``."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    limit, offset, rql_parts = default_limit, 0, []
    for segment in _split_top_level(text):
        decoded = unquote(segment)
        if decoded.startswith("limit="):
            limit = _int_param("limit", decoded[6:])
        elif decoded.startswith("offset="):
            offset = _int_param("offset", decoded[7:])
        elif decoded.startswith("search="):
            raise RQLError("search: full-text search is not supported by this marketplace.")
        elif match := _LIMIT_CALL.match(decoded):
            limit = int(match.group(1))
            offset = int(match.group(2) or 0)
        else:
            rql_parts.append(from_django_filter(decoded) or decoded)
    if limit > max_limit:
        raise RQLError(f"limit: ensure this value is less than or equal to {max_limit}.")
    ordering: list[str] = []
    select: list[str] = []
    node = None
    if rql_parts:
        try:
            tree = py_rql.parse("&".join(rql_parts))
        except RQLFilterError as exc:
            raise RQLError(
                f"Invalid RQL query: {exc.details.get('error') if exc.details else exc}"
            ) from None
        node = _Builder(fields, ordering, select).build(tree)
    for name in ordering:
        if name.lstrip("-") not in fields:
            raise RQLError(f"ordering: unknown field {name.lstrip('-')!r}.")
    known = set(selectable)
    for name in select:
        if name.lstrip("-+").split(".", 1)[0] not in known:
            raise RQLError(f"select: unknown field {name.lstrip('-+')!r}.")
    return Query(node, tuple(ordering), tuple(select), limit, offset)


def _token(obj: Any) -> str:
    while isinstance(obj, Tree):
        obj = obj.children[0]
    value = str(obj.value if isinstance(obj, Token) else obj)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


class _Builder:
    """lark parse tree → :class:`Node`; collects ordering and select on the way."""

    def __init__(self, fields: Mapping[str, Field], ordering: list[str], select: list[str]) -> None:
        self.fields = fields
        self.ordering = ordering
        self.select = select

    def build(self, tree: Tree) -> Node | None:
        if not tree.children:
            return None
        return self._node(tree.children[0], top=True)

    def _node(self, tree: Any, top: bool = False) -> Node | None:
        kind = tree.data
        if kind in ("term", "expr_term", "logical"):
            return self._node(tree.children[0], top)
        if kind == "and_op":
            children = [self._node(child, top) for child in tree.children]
            kept = tuple(child for child in children if child is not None)
            if not kept:
                return None
            return kept[0] if len(kept) == 1 else And(kept)
        if kind == "or_op":
            return Or(tuple(self._required(child) for child in tree.children))
        if kind == "not_op":
            return Not(self._required(tree.children[0]))
        if kind in ("ordering", "select"):
            if not top:
                raise RQLError(f"{kind}() is only allowed at the top level of the query.")
            names = [_sign_prop(child) for child in tree.children[1:]]
            (self.ordering if kind == "ordering" else self.select).extend(names)
            return None
        if kind == "comp":
            return self._comparison(tree.children)
        if kind == "listing":
            op, field = _token(tree.children[0]), _token(tree.children[1])
            spec = self._field(field)
            values = tuple(_cast(spec, field, _token(child)) for child in tree.children[2:])
            return Cmp(op, field, values)
        if kind == "searching":
            op, field, value = (_token(child) for child in tree.children)
            spec = self._field(field)
            if spec.kind != "str":
                raise RQLError(f"{op}: not available for the field {field!r}.")
            return Cmp(op, field, _like_pattern(value, op == "ilike"))
        raise RQLError(f"Unsupported RQL construct: {kind}.")

    def _required(self, tree: Any) -> Node:
        node = self._node(tree)
        if node is None:
            raise RQLError("ordering() and select() cannot be used inside or() or not().")
        return node

    def _field(self, name: str) -> Field:
        spec = self.fields.get(name)
        if spec is None:
            raise RQLError(f"Unknown filter field: {name!r}.")
        return spec

    def _comparison(self, children: Sequence[Any]) -> Cmp:
        if len(children) == 2:  # field=value
            field, op, raw = _token(children[0]), "eq", _token(children[1])
        elif isinstance(children[0], Tree) and children[0].data == "comp_term":  # eq(field,value)
            op, field, raw = (_token(child) for child in children)
        else:  # field=op=value
            field, op, raw = (_token(child) for child in children)
        return Cmp(op, field, _cast(self._field(field), field, raw))


def _sign_prop(tree: Any) -> str:
    tokens = [_token(child) for child in tree.children if child is not None]
    return "".join(tokens).lstrip("+")


def _cast(spec: Field, field: str, raw: str) -> Any:
    if raw == NULL:
        return None
    if raw == EMPTY:
        return ""
    if spec.kind == "time":
        value = parse_time(raw)
        if value is None:
            raise RQLError(f"{field}: {raw!r} is not a valid ISO 8601 date and time.")
        return value
    if spec.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise RQLError(f"{field}: expected true or false, got {raw!r}.")
        return raw.lower() == "true"
    return raw


def _like_pattern(value: str, insensitive: bool) -> re.Pattern[str]:
    body = ".*".join(re.escape(part) for part in value.split("*"))
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if insensitive else re.DOTALL)
