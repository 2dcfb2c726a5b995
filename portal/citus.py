"""Citus (distributed PostgreSQL): whether the database is a Citus coordinator, and how a
migration makes a table distributed or a reference table there (README "Scaling out").

On plain PostgreSQL every function here does nothing: the same migrations serve a single
server and a cluster. On a coordinator whose workers are added, ``manage.py migrate``
distributes the schema by calling :func:`reference_tables` and :func:`distributed_table`
from the apps' distribution migrations, each app for its own tables.

Citus wants every unique constraint of a distributed table to include its distribution
column and every foreign key between distributed tables to join on it: the primary key of a
distributed table becomes ``(id, <column>)`` (the ids stay unique: one sequence gives them),
and the foreign keys that point at another distributed table by its id are dropped there
(Django still cascades deletes made through the ORM; none of these tables is written by a
delete that relies on the database's own check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def is_citus(connection: Any) -> bool:
    """Whether ``connection`` is on a Citus coordinator with at least one worker added."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
        if cursor.fetchone() is None:
            return False
        cursor.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive")
        row = cursor.fetchone()
    return bool(row and row[0])


def _kind(cursor: Any, table: str) -> str | None:
    """'distributed', 'reference', 'local' (a Citus local table), or None (not in Citus)."""
    cursor.execute(
        "SELECT partmethod, repmodel FROM pg_dist_partition WHERE logicalrelid = %s::regclass",
        [table],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    partmethod, repmodel = row
    if partmethod == "h":
        return "distributed"
    return "reference" if repmodel == "t" else "local"


# Set on the database by the distribution (ALTER DATABASE ... SET), so that every session
# of the portal gets them:
# - a join off the distribution columns (a membership's profile to the profile's UUID) may
#   be run by repartitioning both sides over the workers;
# - a SET LOCAL in a transaction (the dry run's lock_timeout and statement_timeout) holds on
#   the workers' connections of that transaction too, where the rows are locked, not only
#   on the coordinator's.
SESSION_SETTINGS = {
    "citus.enable_repartition_joins": "on",
    "citus.propagate_set_commands": "local",
}


@dataclass(frozen=True)
class Distributed:
    """A table hash-distributed on ``column``, its shards beside ``colocate_with``'s."""

    table: str
    column: str
    colocate_with: str = "none"


def _foreign_keys_drop(cursor: Any, table: str) -> list[tuple[str, str, str]]:
    """Drop every foreign key of ``table``; return (name, target table, definition) each."""
    cursor.execute(
        """
        SELECT conname, confrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE contype = 'f' AND conrelid = %s::regclass
        """,
        [table],
    )
    dropped = [tuple(row) for row in cursor.fetchall()]
    for name, _, _ in dropped:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return dropped


def _primary_key_widen(cursor: Any, table: str, column: str) -> None:
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'p' AND conrelid = %s::regclass",
        [table],
    )
    pkey = cursor.fetchone()
    if pkey is not None and pkey[1] == "PRIMARY KEY (id)":
        # One subcommand per statement: Citus refuses ADD CONSTRAINT beside another.
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{pkey[0]}"')
        cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id, {column})")


def schema_distribute(
    schema_editor: BaseDatabaseSchemaEditor,
    *,
    distributed: list[Distributed],
    reference: list[str],
) -> None:
    """On a Citus coordinator: hash-distribute the ``distributed`` tables (in order: a table
    is co-located with one before it) and copy the ``reference`` tables to every node; on
    plain PostgreSQL, nothing.

    The steps are ordered by Citus's rules. A distributed table's foreign keys go first
    (Citus refuses keys to a table left on the coordinator, and one pointing at another
    distributed table must join on both distribution columns); its primary key is widened
    to ``(id, column)``; it is distributed. Then the reference tables: the coordinator's
    tables that point at them become Citus local tables (they stay on the coordinator, and
    may join them there). Last, the distributed tables' keys to reference tables are put
    back: those Citus keeps, on every shard.
    """
    connection = schema_editor.connection
    if not is_citus(connection):
        return
    kept: list[tuple[str, str]] = []
    references = set(reference)
    with connection.cursor() as cursor:
        # One connection per node for the whole migration: it runs in one transaction, and
        # Citus cannot convert the coordinator's tables after a parallel operation in it.
        cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        counters = _sequences_read(cursor)
        todo = [entry for entry in distributed if _kind(cursor, entry.table) != "distributed"]
        for entry in todo:
            for name, target, definition in _foreign_keys_drop(cursor, entry.table):
                if target in references:
                    kept.append((entry.table, f'CONSTRAINT "{name}" {definition}'))
        for entry in todo:
            _primary_key_widen(cursor, entry.table, entry.column)
            cursor.execute(
                "SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                [entry.table, entry.column, entry.colocate_with],
            )
        for table in reference:
            if _kind(cursor, table) != "reference":
                cursor.execute("SELECT create_reference_table(%s)", [table])
        for table, constraint in kept:
            cursor.execute(f"ALTER TABLE {table} ADD {constraint}")
        _sequences_restore(cursor, counters)
    session_settings_apply(schema_editor)


def session_settings_apply(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """On a Citus coordinator, set :data:`SESSION_SETTINGS` for every new session of the
    portal's database, and this one; on plain PostgreSQL, nothing."""
    connection = schema_editor.connection
    if not is_citus(connection):
        return
    database = connection.ops.quote_name(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        for setting, value in SESSION_SETTINGS.items():
            cursor.execute(f"ALTER DATABASE {database} SET {setting} = {value}")
            cursor.execute(f"SET {setting} = {value}")


def _sequences_read(cursor: Any) -> dict[str, int]:
    cursor.execute(
        "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences"
        " WHERE last_value IS NOT NULL"
    )
    return {name: int(value) for name, value in cursor.fetchall()}


def _sequences_restore(cursor: Any, counters: dict[str, int]) -> None:
    """Citus rebuilds a table it converts, and its identity column's sequence starts again
    at 1: each sequence is set back where it was, so no id is handed out twice."""
    for name, value in counters.items():
        cursor.execute(
            "SELECT setval(%s, greatest(%s, (SELECT coalesce(last_value, 0) FROM pg_sequences"
            " WHERE schemaname || '.' || sequencename = %s)))",
            [name, value, name],
        )


def rows_per_worker(connection: Any, table: str) -> dict[str, int]:
    """How the rows of a distributed table spread over the nodes (``host:port`` -> rows),
    counted shard by shard on the workers. ``connection``: Django's or a psycopg one."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.nodename || ':' || s.nodeport, sum(r.result::bigint)
            FROM run_command_on_shards(%s, 'SELECT count(*) FROM %%s') r
            JOIN citus_shards s USING (shardid)
            WHERE r.success GROUP BY 1 ORDER BY 1
            """,
            [table],
        )
        return {node: int(rows) for node, rows in cursor.fetchall()}


def distributed_tables(connection: Any) -> list[tuple[str, str, str]]:
    """(table, kind, distribution column) of each table Citus distributes or replicates.
    ``connection``: Django's or a psycopg one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name::text, citus_table_type, distribution_column FROM citus_tables"
            " ORDER BY 1"
        )
        return [tuple(row) for row in cursor.fetchall()]
