"""Outbound export benchmark: a real run against a floor.

    make bench-outbound                                  # 1,000,000 members of 20 segments
    .venv/bin/python bench/outbound.py --members 200000

It makes a scratch database next to DATABASE_URL's (``<name>_outbound``), 1,000,000 profiles
each a member of 1 to 3 of 20 segments (set-based inserts), a local-folder destination
mapping the 20 segments, and runs the real export three times: with the default row
template, a JSON-line template and a tab-separated one. The floor is ``COPY (the same rows)
TO STDOUT`` read to the end. It prints rows/s and the peak RSS of this process.
Targets: >= 200,000 rows/s, <= 200 MB.
On a Citus coordinator (``python -m portal.citus_cluster run -- .venv/bin/python
bench/outbound.py``) the scratch database is made on every node and distributed by
``migrate``; the run then prints how each distributed table's rows lie on the workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from scratch import database_said, scratch_database, spread_print  # bench/, its own folder

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SEGMENTS = 20
# Tab-separated: every line comes out of COPY escaped ("\\t") and is unescaped in Python.
TAB_ROW = '<UUID><TAB><SEGMENT_LIST:{s|<s.alias>}; separator=","><TAB><REMOVED_SEGMENT_LIST>'
JSON_ROW = (
    '<OPEN_CURLY_BRACKET>"uuid":"<UUID>","segments":[<SEGMENT_LIST:{s|"<s.alias>"};'
    ' separator=",">]<CLOSE_CURLY_BRACKET>'
)


def _setup(members: int) -> None:
    os.environ["DATABASE_URL"] = scratch_database("outbound")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")  # required, never used
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from partners.models import DataSource, Partner
    from segments.models import Segment, Trait

    partner = Partner.objects.create(pid=9002, slug="bench", name="Bench Partner")
    source = DataSource.objects.create(
        dpid=901, partner=partner, name="Bench IDs", id_type="device", inbound_id_type="dpuuid"
    )
    Trait.objects.create(sid=1, data_source=source, name="t")
    for sid in range(100, 100 + SEGMENTS):
        Segment.objects.create(sid=sid, data_source=source, name=f"s{sid}", rule="1T")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO segments_profile (uuid, created_at)"
            " SELECT '1' || lpad(n::text, 37, '0'), now()"
            " FROM generate_series(1, %s) n",
            [members],
        )
        cursor.execute(
            "INSERT INTO segments_segmentmembership (profile_id, segment_id, joined_at)"
            " SELECT p.id, 100 + ((p.id * k) % 20), now() - (p.id % 1000) * interval '1 minute'"
            " FROM segments_profile p, generate_series(1, 1 + (p.id % 3)::int) k"
            " ON CONFLICT DO NOTHING"
        )
        cursor.execute("ANALYZE")


def _destination(folder: Path, row_template: str) -> object:
    from datetime import date

    from partners.models import Destination, DestinationSegment, InboundChannel, Partner

    partner = Partner.objects.get(pid=9002)
    channel, _ = InboundChannel.objects.get_or_create(
        partner=partner, name="bench", defaults={"kind": "local", "prefix": str(folder)}
    )
    destination = Destination.objects.create(
        partner=partner,
        name=f"bench {row_template[:10]}",
        channel=channel,
        row_template=row_template,
        max_part_bytes=200 * 1024**2,
    )
    for sid in range(100, 100 + SEGMENTS):
        DestinationSegment.objects.create(
            destination=destination,
            segment_id=sid,
            value=f"seg-{sid}",
            start_date=date(2020, 1, 1),
        )
    return destination


def _floor() -> tuple[float, int]:
    from django.db import connection

    sql = (
        "COPY (SELECT p.uuid, array_agg(m.segment_id ORDER BY m.segment_id)"
        " FROM segments_segmentmembership m JOIN segments_profile p ON p.id = m.profile_id"
        " GROUP BY p.id, p.uuid) TO STDOUT"
    )
    started = time.perf_counter()
    rows = 0
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        for _ in copy.rows():
            rows += 1
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000, help="profiles")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL (or run through `make bench-outbound`).")
    print(f"setting up: {args.members:,} profiles in {SEGMENTS} segments", flush=True)
    _setup(args.members)
    print(f"database: {database_said()}", flush=True)
    from partners.outbound.runs import outbound_run
    from partners.outbound.templates import DEFAULT_ROW

    with tempfile.TemporaryDirectory() as folder:
        templates = (("default row", DEFAULT_ROW), ("JSON line", JSON_ROW), ("tab row", TAB_ROW))
        for label, template in templates:
            destination = _destination(Path(folder), template)
            started = time.perf_counter()
            run = outbound_run(destination=destination)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
            print(
                f"{label:12} {elapsed:7.1f} s  {run.lines / elapsed:10,.0f} rows/s"
                f"  {run.lines:,} rows, {run.bytes / 1e6:.0f} MB in {run.files.count()} file(s)",
                flush=True,
            )
    floor, rows = _floor()
    print(f"floor        {floor:7.1f} s  {rows / floor:10,.0f} rows/s  (COPY ... TO STDOUT)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS     {peak:7.0f} MB (this process)")
    spread_print()


if __name__ == "__main__":
    main()
