"""A private Citus cluster on loopback ports, for `make test-citus` and the benchmarks.

A coordinator and two workers (plus one spare worker, started but not added, that the
rebalance test adds), each a PostgreSQL server of this machine's with ``citus`` preloaded,
their data in a temporary folder removed when the command ends::

    python -m portal.citus_cluster run -- pytest tests/citus     # DATABASE_URL set
    python -m portal.citus_cluster run --keep -- bash            # a shell on a cluster

Citus itself is installed by ``../shared/citus/install.sh`` (README "Scaling out"); this
module only starts servers. The commands run with ``DATABASE_URL`` on the coordinator's
``s2s_portal`` database, and ``CITUS_SPARE_WORKER`` (``host:port``) naming the spare worker.
Every database it makes (``s2s_portal`` and pytest-django's ``test_s2s_portal``) has the
extension on every node and the two workers added, so ``manage.py migrate`` distributes the
schema on it (segments/migrations/0005_distribute.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DATABASES = ("s2s_portal", "test_s2s_portal")
# Few shards: a test cluster on two cores spends its time opening shard connections, not
# scanning. A production cluster keeps Citus's default (32) or more (README "Scaling out").
TEST_SHARD_COUNT = 8


def pg_bin(tool: str) -> str:
    """A server program of the newest PostgreSQL major installed (the one Citus built for)."""
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.iterdir() if (p / "bin" / tool).exists()), key=_major)
    if not majors:
        raise SystemExit(f"PostgreSQL's {tool} was not found under {root}")
    return str(majors[-1] / "bin" / tool)


def _major(path: Path) -> int:
    return int(path.name) if path.name.isdigit() else 0


def citus_installed() -> bool:
    lib = subprocess.run(
        [pg_bin("pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (Path(lib) / "citus.so").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: CI runs as root, so the servers run as `postgres`.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass
class Node:
    name: str
    folder: Path
    port: int = field(default_factory=_free_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, shard_count: int) -> None:
        subprocess.run(
            _as_server_user(
                [pg_bin("initdb"), "-D", str(self.folder), "-U", "postgres", "-A", "trust"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        settings = {
            "shared_preload_libraries": "'citus'",
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "max_connections": "400",
            # Citus commits a transaction that wrote on several nodes in two phases.
            "max_prepared_transactions": "200",
            # Shard moves (citus_rebalance_start) copy by logical replication.
            "wal_level": "logical",
            "citus.shard_count": str(shard_count),
            # A throwaway cluster: no flush to disk waited for.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.folder / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        log = str(self.folder / "log")
        subprocess.run(
            _as_server_user([pg_bin("pg_ctl"), "-D", str(self.folder), "-l", log, "-w", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_server_user([pg_bin("pg_ctl"), "-D", str(self.folder), "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def sql(self, statement: str, database: str = "postgres") -> str:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        ) as conn:
            cursor = conn.execute(statement)
            return "" if cursor.description is None else str(cursor.fetchall())


@dataclass
class Cluster:
    coordinator: Node
    workers: list[Node]
    spare: Node

    def url(self, database: str = DATABASES[0]) -> str:
        return f"postgres://postgres@{self.coordinator.address}/{database}"

    def database_create(self, name: str) -> None:
        """A database with the extension on every node, the workers added to it."""
        for node in (self.coordinator, *self.workers, self.spare):
            node.sql(f"CREATE DATABASE {name}")
            node.sql("CREATE EXTENSION citus", name)
        self.coordinator.sql(
            f"SELECT citus_set_coordinator_host('127.0.0.1', {self.coordinator.port})", name
        )
        for worker in self.workers:
            self.coordinator.sql(f"SELECT citus_add_node('127.0.0.1', {worker.port})", name)


@contextlib.contextmanager
def cluster(*, workers: int = 2, keep: bool = False) -> Iterator[Cluster]:
    if not citus_installed():
        raise SystemExit("Citus is not installed: run ../shared/citus/install.sh (as root) first")
    base = Path(tempfile.mkdtemp(prefix="s2s-citus-"))
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    nodes = [Node("coordinator", base / "coordinator")]
    nodes += [Node(f"worker{n}", base / f"worker{n}") for n in range(1, workers + 2)]
    started: list[Node] = []
    try:
        for node in nodes:
            node.start(shard_count=TEST_SHARD_COUNT)
            started.append(node)
        found = Cluster(coordinator=nodes[0], workers=nodes[1:-1], spare=nodes[-1])
        for database in DATABASES:
            found.database_create(database)
        yield found
    finally:
        if not keep:
            for node in started:
                node.stop()
            shutil.rmtree(base, ignore_errors=True)


def run(command: list[str], *, keep: bool) -> int:
    with cluster(keep=keep) as found:
        env = dict(os.environ)
        env["DATABASE_URL"] = found.url()
        env["CITUS_SPARE_WORKER"] = found.spare.address
        print(
            f"citus: coordinator {found.coordinator.address}, workers "
            f"{', '.join(w.address for w in found.workers)}, spare {found.spare.address}",
            flush=True,
        )
        started = time.monotonic()
        code = subprocess.call(command, env=env)
        print(f"citus: command ended ({code}) after {time.monotonic() - started:.0f} s")
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.citus_cluster")
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command with DATABASE_URL on a new cluster")
    run_parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command")
    return run(command, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
