"""The profile store on a real Citus cluster (`make test-citus`; skipped elsewhere).

The differential test plays one day of exchange (tests/citus/scenario.py) on plain
PostgreSQL and on the cluster, each in a new database, and finds the same receipts, traits
and their times, memberships, change logs, mappings, line errors and exported files; the
cluster's rows lie on both workers. Then a third worker joins, the shards are rebalanced
onto it, and what is stored reads the same and a new batch is applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from portal.citus import distributed_tables, is_citus, rows_per_worker

pytestmark = pytest.mark.skipif(
    "CITUS_SPARE_WORKER" not in os.environ, reason="runs on the cluster of `make test-citus`"
)

BASE = Path(__file__).resolve().parents[2]
PROFILE_TABLES = [
    "segments_profile",
    "segments_profiletraits",
    "segments_segmentmembership",
    "segments_segmentmembershipchange",
    "partners_idmapping",
]  # (line errors are kept by batch: a few batches may all lie on one worker)


def _node_sql(address: str, statement: str, database: str = "postgres") -> list[tuple]:
    host, port = address.split(":")
    with psycopg.connect(host=host, port=port, user="postgres", dbname=database) as conn:
        conn.autocommit = True
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


_known: list[tuple[str, list[str]]] = []


def _nodes() -> tuple[str, list[str]]:
    """The coordinator's and the workers' addresses, as the test database knows them."""
    if _known:
        return _known[0]
    db = settings.DATABASES["default"]
    coordinator = f"{db['HOST']}:{db['PORT']}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid <> 0")
        workers = [f"{host}:{port}" for host, port in cursor.fetchall()]
    _known.append((coordinator, workers))
    return coordinator, workers


def _database_new(name: str, *, citus: bool) -> str:
    coordinator, workers = _nodes()
    nodes = [coordinator, *workers, os.environ["CITUS_SPARE_WORKER"]] if citus else [coordinator]
    for node in nodes:
        _node_sql(node, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _node_sql(node, f"CREATE DATABASE {name}")
        if citus:
            _node_sql(node, "CREATE EXTENSION citus", name)
    if citus:
        host, port = coordinator.split(":")
        _node_sql(coordinator, f"SELECT citus_set_coordinator_host('{host}', {port})", name)
        for worker in workers:
            host, port = worker.split(":")
            _node_sql(coordinator, f"SELECT citus_add_node('{host}', {port})", name)
    return f"postgres://postgres@{coordinator}/{name}"


def _scenario(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "tests.citus.scenario", *args],
        cwd=BASE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def plays(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any) -> dict[str, object]:
    found: dict[str, object] = {}
    with django_db_blocker.unblock():
        _nodes()  # the test database's cluster, read once
    for kind in ("plain", "citus"):
        folder = tmp_path_factory.mktemp(kind)
        url = _database_new(f"differential_{kind}", citus=kind == "citus")
        _scenario(url, str(folder / "written.json"), str(folder))
        found[kind] = json.loads((folder / "written.json").read_text())
        found[f"{kind}_url"] = url
    return found


def test_the_test_database_is_distributed(db: None) -> None:
    assert is_citus(connection)
    kinds = {name: (kind, column) for name, kind, column in distributed_tables(connection)}
    assert kinds["segments_profile"] == ("distributed", "uuid")
    assert kinds["segments_profiletraits"] == ("distributed", "profile_id")
    assert kinds["partners_idmapping"] == ("distributed", "dpuuid")
    assert kinds["partners_datasource"] == ("reference", "<none>")
    assert kinds["segments_segment"] == ("reference", "<none>")


def test_plain_postgresql_and_the_cluster_store_and_send_the_same(
    plays: dict[str, object],
) -> None:
    plain, citus = plays["plain"], plays["citus"]
    assert isinstance(plain, dict)
    assert isinstance(citus, dict)
    assert plain["receipts"], "the scenario processed nothing"
    assert plain["memberships"]
    assert plain["changes"]
    assert plain["line_errors"]
    for part in sorted(plain):
        assert citus[part] == plain[part], part


def test_the_cluster_rows_lie_on_both_workers(plays: dict[str, object]) -> None:
    url = str(plays["citus_url"])
    _, workers = _nodes()
    for table in PROFILE_TABLES:
        rows = _spread(url, table)
        assert set(rows) == set(workers), (table, rows)
        assert all(n > 0 for n in rows.values()), (table, rows)


def _spread(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return rows_per_worker(conn, table)


def test_a_third_worker_joins_and_takes_its_share(plays: dict[str, object], tmp_path: Path) -> None:
    url = str(plays["citus_url"])
    spare = os.environ["CITUS_SPARE_WORKER"]
    _scenario(url, "dump", str(tmp_path / "before.json"))
    host, port = spare.split(":")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SELECT citus_add_node('{host}', {port})")
        conn.execute("SELECT citus_rebalance_start()")
        conn.execute("SELECT citus_rebalance_wait()")
    for table in PROFILE_TABLES:
        assert _spread(url, table).get(spare, 0) > 0, table
    _scenario(url, "dump", str(tmp_path / "after.json"))
    before = json.loads((tmp_path / "before.json").read_text())
    assert json.loads((tmp_path / "after.json").read_text()) == before
    # A new batch lands on the grown cluster.
    env = {**os.environ, "DATABASE_URL": url}
    path = tmp_path / "ftp_dpm_21_1799999999.sync"
    path.write_text("u20\td_sid=11\n")
    done = subprocess.run(
        [sys.executable, "manage.py", "ingest", str(path), "--json"],
        cwd=BASE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["total_realized_traits"] == 1
