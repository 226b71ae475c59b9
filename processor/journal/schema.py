"""The journal's schema: applying the dialect's migrations, and checking that a store is current.

Written once over a store's connector (:mod:`processor.journal.connector`), as the rest of the
journal's rules are (:mod:`processor.journal.store`). A migration runs in the connector's
``migration()`` transaction, so no two processes migrate one database at the same time.
"""

from __future__ import annotations

from datetime import datetime

from processor.journal.base import SchemaError
from processor.journal.connector import MIGRATE_HINT, Connector
from processor.journal.rows import Row

__all__ = ["migrate", "check_schema"]


def _required(row: Row | None) -> Row:
    assert row is not None  # aggregates and EXISTS always return one row
    return row


def migrate(connector: Connector, now: datetime) -> None:
    """Apply the migrations newer than the store's version (idempotent)."""
    q = connector.queries
    with connector.migration() as tx:
        tx.run(q["create_schema_version"])
        current = _required(tx.one(q["schema_version"]))["version"] or 0
        for migration in connector.migrations():
            if migration.version <= current:
                continue
            tx.script(migration.sql)
            tx.run(
                q["record_schema_version"],
                {
                    "version": migration.version,
                    "name": migration.name,
                    "applied_at": connector.time(now),
                },
            )


def check_schema(connector: Connector) -> None:
    """Raise :class:`SchemaError` unless the store's schema is the one this code needs."""
    q, where = connector.queries, connector.where
    latest = connector.migrations()[-1].version
    with connector.read() as tx:
        if not _required(tx.one(q["schema_version_exists"]))["present"]:
            raise SchemaError(f"the journal schema is missing in {where}: {MIGRATE_HINT}")
        current = _required(tx.one(q["schema_version"]))["version"] or 0
    if current < latest:
        raise SchemaError(
            f"the journal schema in {where} is at version {current}, this code needs "
            f"{latest}: {MIGRATE_HINT}"
        )
    if current > latest:
        raise SchemaError(
            f"the journal schema in {where} is at version {current}, newer than this "
            f"code knows ({latest}): upgrade cancel-processor"
        )
