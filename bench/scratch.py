"""What the benchmarks share: a scratch database next to DATABASE_URL's, made anew, on plain
PostgreSQL or on a Citus cluster (README "Scaling out"), and what they print about it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The tables whose spread over the workers a benchmark prints after its run on Citus.
SPREAD_TABLES = (
    "segments_profile",
    "segments_profiletraits",
    "segments_segmentmembership",
    "segments_segmentmembershipchange",
    "partners_idmapping",
    "partners_lineerror",
)


def scratch_database(suffix: str) -> str:
    """Drop and create ``<DATABASE_URL's name>_<suffix>``; return its URL. When DATABASE_URL
    is a Citus coordinator with workers, the database is made on every worker too, with the
    extension, and the workers added to it: ``migrate`` then distributes it."""
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"{parts.path.lstrip('/') or 'postgres'}_{suffix}"
    try:
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            workers = _citus_workers(conn)
    except psycopg.OperationalError:  # the database itself need not exist: plain PostgreSQL
        workers = []
    for host, port in [(parts.hostname, parts.port), *workers]:
        server = parts._replace(netloc=_netloc(parts, host, port), path="/postgres")
        with psycopg.connect(urlunsplit(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        if workers:
            with psycopg.connect(
                urlunsplit(server._replace(path=f"/{name}")), autocommit=True
            ) as conn:
                conn.execute("CREATE EXTENSION citus")
    url = urlunsplit(parts._replace(path=f"/{name}"))
    if workers:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT citus_set_coordinator_host(%s, %s)", [parts.hostname, parts.port or 5432]
            )
            for host, port in workers:
                conn.execute("SELECT citus_add_node(%s, %s)", [host, port])
    return url


def _citus_workers(conn: Any) -> list[tuple[str, int]]:
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None:
        return []
    rows = conn.execute(
        "SELECT nodename, nodeport FROM pg_dist_node"
        " WHERE groupid <> 0 AND isactive AND noderole = 'primary' ORDER BY nodeid"
    ).fetchall()
    return [(str(host), int(port)) for host, port in rows]


def _netloc(parts: Any, host: str | None, port: int | None) -> str:
    auth = parts.netloc.rpartition("@")[0]
    where = f"{host}:{port}" if port else str(host)
    return f"{auth}@{where}" if auth else where


def database_said() -> str:
    """What the benchmark runs on, for its first line (after django.setup())."""
    from django.db import connection

    from portal.citus import is_citus

    if not is_citus(connection):
        return "plain PostgreSQL"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive")
        row = cursor.fetchone()
    return f"a Citus coordinator with {row[0] if row else 0} workers"


def spread_print() -> None:
    """On Citus: how the rows of each distributed table lie over the workers."""
    from django.db import connection

    from portal.citus import is_citus, rows_per_worker

    if not is_citus(connection):
        return
    print("rows per worker (Citus):")
    for table in SPREAD_TABLES:
        spread = rows_per_worker(connection, table)
        total = sum(spread.values())
        shares = ", ".join(
            f"{node} {rows:,} ({rows / total:.0%})" if total else f"{node} 0"
            for node, rows in spread.items()
        )
        print(f"  {table:34} {total:>11,}  {shares}")
