"""Inbound processing benchmark: the real pipeline end-to-end on PostgreSQL, against a floor.

    make bench-inbound                       # 1,000,000 records (the README's figures)
    .venv/bin/python bench/inbound.py --records 2000000

It creates a scratch database next to DATABASE_URL's (``<name>_bench``, dropped and made
again), migrates it, loads a taxonomy of 500 onboarded traits (100 of them with key-value
rules), 500,000 profiles and 500,000 ID mappings, and writes two gzip files: half the
records keyed by platform UUID, half by DPUUID, ~5.5 signals per record. It then runs the
real pipeline (register + process, as the RQ job does) on both, and measures the floor on
the same files: gunzip + split-based parse + binary COPY of the same rows into an unlogged
table. It prints records/s, signals/s, the peak RSS of the pipeline and the ratio to the
floor. Targets (2 cores): >= 50,000 records/s, <= 1.5x the floor, peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from scratch import scratch_database  # bench/, the script's own folder

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

TRAITS = 500
RULE_TRAITS = 100
PROFILES = 500_000
KEYS = [f"k{i}" for i in range(20)]


def _setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")  # required, never used
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed() -> None:
    from django.db import connection

    from partners.models import DataSource, Partner
    from segments.models import Trait

    partner = Partner.objects.create(pid=9001, slug="bench", name="Bench Partner")
    DataSource.objects.create(
        dpid=801, partner=partner, name="UUID-keyed", id_type="cookie", inbound_id_type="uuid"
    )
    DataSource.objects.create(
        dpid=802, partner=partner, name="DPUUID-keyed", id_type="cookie", inbound_id_type="dpuuid"
    )
    traits = []
    for dpid in (801, 802):
        for i in range(TRAITS):
            sid = dpid * 1000 + i
            rule = ""
            if i < RULE_TRAITS:
                key = KEYS[i % len(KEYS)]
                rule = f'{key} == "v{i % 7}"' if i % 2 else f"{key} >= {i % 50} AND {key} < 90"
            traits.append(Trait(sid=sid, data_source_id=dpid, name=f"t{sid}", rule=rule))
    Trait.objects.bulk_create(traits)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO segments_profile (uuid, created_at)"
            " SELECT lpad((10::numeric ^ 37 + g)::text, 38, '0'), now()"
            " FROM generate_series(1, %s) g",
            [PROFILES],
        )
        cursor.execute(
            "INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id, first_seen_at,"
            " last_seen_at) SELECT 802, 'dp' || id, id, now(), now() FROM segments_profile"
        )
        cursor.execute("ANALYZE")


def _signals(rng: random.Random, dpid: int) -> str:
    signals = []
    for _ in range(rng.choice((3, 4, 5, 6, 7, 8))):  # 5.5 on average
        if rng.random() < 0.7:
            signals.append(f"d_sid={dpid * 1000 + rng.randrange(RULE_TRAITS, TRAITS)}")
        else:
            key = rng.choice(KEYS)
            value = f"v{rng.randrange(7)}" if rng.random() < 0.5 else str(rng.randrange(100))
            signals.append(f"{key}={value}")
    return ",".join(signals)


def _write_files(folder: Path, records: int) -> list[Path]:
    rng = random.Random(42)
    half = records // 2
    uuid_file = folder / "ftp_dpm_801_1700000000.sync.gz"
    dpuuid_file = folder / "ftp_dpm_802_1700000000.sync.gz"
    with gzip.open(uuid_file, "wt", compresslevel=1) as out:
        for _ in range(half):
            uuid = str(10**37 + rng.randrange(1, PROFILES + 1)).zfill(38)
            out.write(f"{uuid}\t{_signals(rng, 801)}\n")
    with gzip.open(dpuuid_file, "wt", compresslevel=1) as out:
        for _ in range(records - half):
            out.write(f"dp{rng.randrange(1, PROFILES + 1)}\t{_signals(rng, 802)}\n")
    return [uuid_file, dpuuid_file]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _ChildrenRSS(threading.Thread):
    """Samples the resident memory of this process's children (the parse processes), summed,
    every 0.1 s. (ru_maxrss of children is no use: a spawned child briefly counts its
    parent's pages between fork and exec.)"""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        parent = f"PPid:\t{os.getpid()}\n"
        while not self.stop.wait(0.1):
            total = 0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if parent in status and "python" in status.split("\n", 1)[0]:
                    total += int(status.split("VmRSS:")[1].split()[0])
            self.peak_mb = max(self.peak_mb, total / 1024)


def _pipeline(files: list[Path], *, statements: int) -> tuple[float, int, int]:
    from django.db import connection

    from partners.inbound.services import inbound_batch_process, inbound_files_register

    timings: list[tuple[float, str]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timings.append((time.perf_counter() - started, " ".join(sql.split())[:100]))

    records = signals = 0
    started = time.perf_counter()
    with connection.execute_wrapper(timed):
        for path in files:
            registration = inbound_files_register(paths=[path])
            receipt = inbound_batch_process(batch_id=registration.batches[0].pk)
            records += receipt.records_received
            signals += receipt.total_signals
    elapsed = time.perf_counter() - started
    sql = sum(t for t, _ in timings)
    print(f"  SQL statements: {sql:.1f} s; the rest (read, parse, COPY): {elapsed - sql:.1f} s")
    for seconds, text in sorted(timings, reverse=True)[:statements]:
        print(f"  {seconds:6.1f} s  {text}")
    return elapsed, records, signals


def _floor(files: list[Path]) -> float:
    """gunzip + a split-based parse + binary COPY of the same rows into an unlogged table."""
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE UNLOGGED TABLE floor_rows (user_id text, signals text[])")
        for path in files:
            with (
                gzip.open(path, "rb") as stream,
                cursor.copy("COPY floor_rows FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "text[]"])
                for raw in stream:
                    user_id, _, rest = raw.decode().rstrip("\n").partition("\t")
                    copy.write_row((user_id, rest.split(",")))
        cursor.execute("DROP TABLE floor_rows")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--statements", type=int, default=0, help="show the N slowest SQL")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL (or run through `make bench-inbound`).")

    print(f"setting up: {PROFILES:,} profiles and mappings, {2 * TRAITS} traits", flush=True)
    _setup_django(scratch_database("bench"))
    _seed()
    with tempfile.TemporaryDirectory() as folder:
        files = _write_files(Path(folder), args.records)
        size = sum(p.stat().st_size for p in files)
        print(f"files: {args.records:,} records, {size / 1e6:.1f} MB gzip", flush=True)
        rss_before = _peak_rss_mb()
        children = _ChildrenRSS()
        children.start()
        elapsed, records, signals = _pipeline(files, statements=args.statements)
        children.stop.set()
        rss = _peak_rss_mb()
        floor = _floor(files)
    print(
        f"pipeline:  {elapsed:8.1f} s  {records / elapsed:10,.0f} records/s"
        f"  {signals / elapsed:12,.0f} signals/s"
    )
    print(f"floor:     {floor:8.1f} s  {records / floor:10,.0f} records/s")
    print(f"ratio:     {elapsed / floor:8.2f} x the floor")
    print(
        f"peak RSS:  {rss + children.peak_mb:8.0f} MB: this process {rss:.0f} MB (before the"
        f" pipeline: {rss_before:.0f} MB), its parse processes {children.peak_mb:.0f} MB together"
    )


if __name__ == "__main__":
    main()
