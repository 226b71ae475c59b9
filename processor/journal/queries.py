"""SQL kept as SQL: named queries and versioned migrations, read from the package's ``sql`` folder.

``sql/<dialect>.sql`` holds the queries a store runs, each under a ``-- name: <identifier>`` header
(procrastinate-style); everything up to the next header belongs to that query. Comment lines
right under a header document the query and are kept (the database ignores them).

``sql/migrations/<dialect>/NNNN_<name>.sql`` are the schema migrations, applied in order of their
number; the numbers must run 1, 2, 3, ... without a gap, so a missing file is an error at load time
rather than a half-migrated database.

Failure modes: a malformed file (text before the first header, a duplicate name, a migration
numbering gap) raises :class:`ValueError` naming the file: a packaging mistake, not a runtime one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["Migration", "parse_queries", "load_queries", "load_migrations"]

_HEADER = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def parse_queries(text: str, *, source: str = "<string>") -> dict[str, str]:
    """Split ``text`` into ``{name: sql}`` by its ``-- name:`` headers."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line.strip())
        if header:
            name = header.group(1)
            if name in queries:
                raise ValueError(f"{source}:{number}: query {name!r} is defined twice")
            current = queries[name] = []
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise ValueError(f"{source}:{number}: SQL before the first '-- name:' header")
    result = {}
    for name, lines in queries.items():
        sql = "\n".join(lines).strip().rstrip(";").strip()
        if not sql or all(ln.strip().startswith("--") for ln in sql.splitlines()):
            raise ValueError(f"{source}: query {name!r} is empty")
        result[name] = sql
    return result


def _sql_folder() -> Traversable:
    return resources.files(__package__).joinpath("sql")


@cache
def load_queries(dialect: str) -> Mapping[str, str]:
    """The named queries of ``sql/<dialect>.sql`` (read once per process)."""
    path = _sql_folder().joinpath(f"{dialect}.sql")
    return parse_queries(path.read_text(encoding="utf-8"), source=f"sql/{dialect}.sql")


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The migrations of ``sql/migrations/<dialect>/``, ordered by version, checked for gaps."""
    folder = _sql_folder().joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise ValueError(f"sql/migrations/{dialect}/{entry.name}: expected NNNN_name.sql")
            continue
        found.append(
            Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(
                f"sql/migrations/{dialect}: expected migration {expected:04d}, "
                f"found {migration.version:04d}_{migration.name}.sql"
            )
    if not found:
        raise ValueError(f"sql/migrations/{dialect}: no migrations")
    return tuple(found)
