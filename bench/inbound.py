"""Inbound processing benchmark: the real pipeline end-to-end on PostgreSQL, against a floor.

    make bench-inbound                       # 1,000,000 records (the README's figures)
    .venv/bin/python bench/inbound.py --records 2000000
    make bench-inbound BENCH_ARGS="--workers 2 --parts 4"   # real RQ workers, a job per part

It creates a scratch database next to DATABASE_URL's (``<name>_bench``, dropped and made
again), migrates it, loads a taxonomy of 500 onboarded traits (100 of them with key-value
rules), 500,000 profiles and 500,000 ID mappings, and writes two gzip files: half the
records keyed by platform UUID, half by DPUUID, ~5.5 signals per record. It then runs the
real pipeline (register + process, as the RQ job does) on both, and measures the floor on
the same files: gunzip + split-based parse + binary COPY of the same rows into an unlogged
table. It prints records/s, signals/s, the peak RSS of the pipeline and the ratio to the
floor. Targets (2 cores): >= 50,000 records/s, <= 1.5x the floor, peak RSS <= 300 MB.
On a Citus coordinator (``python -m portal.citus_cluster run -- .venv/bin/python
bench/inbound.py``) the scratch database is made on every node and distributed by
``migrate``; the run then prints how each distributed table's rows lie on the workers.

With ``--workers N`` each file is written in ``--parts`` split parts, both batches are queued
as production queues them (one job per part, then the batch job) and N real RQ workers
(``manage.py rqworker inbound --burst``, on REDIS_URL) process them; the time is from the
first job queued to the last batch processed, the RSS that of every worker process and its
descendants together.
"""

from __future__ import annotations

import argparse
import functools
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

from scratch import database_said, scratch_database, spread_print  # bench/, its own folder

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


def _write_files(folder: Path, records: int, parts: int = 1) -> list[Path]:
    """Half the records by UUID (data source 801), half by DPUUID (802); each file in
    ``parts`` split parts when more than one."""
    rng = random.Random(42)
    half = records // 2
    paths = []
    for dpid, count in ((801, half), (802, records - half)):
        for part in range(1, parts + 1):
            split = f".{part}" if parts > 1 else ""
            path = folder / f"ftp_dpm_{dpid}_1700000000.sync{split}.gz"
            with gzip.open(path, "wt", compresslevel=1) as out:
                for _ in range(count // parts + (part <= count % parts)):
                    if dpid == 801:
                        user = str(10**37 + rng.randrange(1, PROFILES + 1)).zfill(38)
                    else:
                        user = f"dp{rng.randrange(1, PROFILES + 1)}"
                    out.write(f"{user}\t{_signals(rng, dpid)}\n")
            paths.append(path)
    return paths


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
                if (
                    parent in status
                    and "python" in status.split("\n", 1)[0]
                    and "VmRSS:" in status  # not a process that is just ending
                ):
                    total += int(status.split("VmRSS:")[1].split()[0])
            self.peak_mb = max(self.peak_mb, total / 1024)


def _pipeline(files: list[Path], *, statements: int) -> tuple[float, int, int]:
    from django.db import connection

    from partners.inbound.processing import inbound_batch_process
    from partners.inbound.registration import inbound_files_register

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


def _descendants_rss_mb(root: int) -> float:
    """The resident memory of every process below ``root`` (workers, their work horses and
    parse processes), summed."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(status.split("PPid:")[1].split()[0])
        rss[int(entry)] = int(status.split("VmRSS:")[1].split()[0]) if "VmRSS:" in status else 0
    total = 0
    for pid in parents:
        ancestor = parents.get(pid, 0)
        while ancestor > 1 and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root:
            total += rss[pid]
    return total / 1024


def _with_workers(files: list[Path], *, workers: int) -> tuple[float, int, int, float]:
    """Queue the batches as production does and let ``workers`` real RQ workers do them."""
    import subprocess

    import django_rq
    from django.db import transaction

    from partners.inbound.queueing import inbound_batch_enqueue
    from partners.inbound.registration import inbound_files_register
    from partners.models import InboundBatch, Receipt

    queue = django_rq.get_queue("inbound")
    queue.empty()
    env = {**os.environ, "INBOUND_PART_JOBS_MIN_BYTES": "0"}
    started = time.perf_counter()
    with transaction.atomic():
        batches = inbound_files_register(paths=files).batches
        for batch in batches:
            transaction.on_commit(functools.partial(inbound_batch_enqueue, batch=batch))
    manage = str(BASE_DIR / "manage.py")
    processes = [
        subprocess.Popen(
            [sys.executable, manage, "rqworker", "inbound", "--burst", "-v", "0"], env=env
        )
        for _ in range(workers)
    ]
    peak = 0.0
    ids = [batch.pk for batch in batches]
    while True:
        peak = max(peak, _descendants_rss_mb(os.getpid()))
        done = InboundBatch.objects.filter(pk__in=ids, status__in=["processed", "failed"])
        if done.count() == len(ids):
            break
        if all(p.poll() is not None for p in processes):  # a dependent released late
            processes.append(
                subprocess.Popen(
                    [sys.executable, manage, "rqworker", "inbound", "--burst", "-v", "0"], env=env
                )
            )
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.wait()
    receipts = Receipt.objects.filter(batch_id__in=ids)
    records = sum(r.records_received for r in receipts)
    signals = sum(r.total_signals for r in receipts)
    return elapsed, records, signals, peak


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
    parser.add_argument(
        "--workers", type=int, default=0, help="N real RQ workers, a job per part (0: in process)"
    )
    parser.add_argument("--parts", type=int, default=4, help="split parts per file (--workers)")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL (or run through `make bench-inbound`).")
    if args.workers and not os.environ.get("REDIS_URL"):
        sys.exit("--workers needs REDIS_URL (or run through `make bench-inbound`).")
    if args.workers:
        _workers_main(args)
        return

    print(f"setting up: {PROFILES:,} profiles and mappings, {2 * TRAITS} traits", flush=True)
    _setup_django(scratch_database("bench"))
    print(f"database: {database_said()}", flush=True)
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
    spread_print()


def _workers_main(args: argparse.Namespace) -> None:
    print(f"setting up: {PROFILES:,} profiles and mappings, {2 * TRAITS} traits", flush=True)
    os.environ["DATABASE_URL"] = scratch_database("bench")
    _setup_django(os.environ["DATABASE_URL"])
    print(f"database: {database_said()}", flush=True)
    _seed()
    with tempfile.TemporaryDirectory() as folder:
        files = _write_files(Path(folder), args.records, parts=args.parts)
        size = sum(p.stat().st_size for p in files)
        print(
            f"files: {args.records:,} records in 2 batches of {args.parts} parts,"
            f" {size / 1e6:.1f} MB gzip; {args.workers} worker(s)",
            flush=True,
        )
        elapsed, records, signals, peak = _with_workers(files, workers=args.workers)
        floor = _floor(files)
    print(
        f"workers:   {elapsed:8.1f} s  {records / elapsed:10,.0f} records/s"
        f"  {signals / elapsed:12,.0f} signals/s"
    )
    print(f"floor:     {floor:8.1f} s  {records / floor:10,.0f} records/s")
    print(f"ratio:     {elapsed / floor:8.2f} x the floor")
    print(f"peak RSS:  {peak:8.0f} MB: every worker process and its descendants together")
    spread_print()


if __name__ == "__main__":
    main()
