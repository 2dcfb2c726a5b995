"""One day of exchange, played on whatever database ``DATABASE_URL`` names, and what it left
written as canonical JSON: the differential test (test_differential.py) plays it on plain
PostgreSQL and on the Citus cluster and compares the two.

    DATABASE_URL=... python -m tests.citus.scenario OUT.json FOLDER
    DATABASE_URL=... python -m tests.citus.scenario dump OUT.json    # what is stored, only

Every kind of file: ID-sync files (our UUIDs first, then a chained DPUUID file), trait files
with realizations, removals in line order, an overwrite, a user over the 200-line cap, a
platform-UUID data source making profiles, a cross-device data source keeping pending
records that a later ID-sync file realizes; then membership, a rebuild and the profile
viewer (outbound full and iter runs with SCENARIO_EXPORTS set: plain PostgreSQL only yet).
Times differ between two plays, so each is written as the step of the play that wrote it
(the delivery, the rebuild).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

UUIDS = [f"{n:038d}" for n in range(10**37, 10**37 + 40)]


def play(out: Path, folder: Path) -> None:
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tests.factories import DataSourceFactory, PartnerFactory, SegmentFactory, TraitFactory

    partner = PartnerFactory.create(pid=1001, slug="acme", name="Acme Data")
    dpuuids = DataSourceFactory.create(dpid=21, partner=partner)
    other = DataSourceFactory.create(dpid=22, partner=partner, id_type="cross_device")
    platform = DataSourceFactory.create(dpid=31, partner=partner, inbound_id_type="uuid")
    for sid, source in ((10, dpuuids), (11, dpuuids), (12, dpuuids), (90, other), (40, platform)):
        TraitFactory.create(sid=sid, data_source=source)
    rules = {500: "10T AND 11T", 501: "[10T] <= 30D", 502: "11T AND NOT 10T", 503: "90T OR 40T"}
    for sid, rule in rules.items():
        SegmentFactory.create(sid=sid, data_source=dpuuids, rule=rule)

    days = iter(range(1_700_000_000, 1_800_000_000, 86_400))
    deliveries = [
        # ID sync: our UUIDs to DPUUIDs of 21 and 22 (a cross-device ID left for later).
        {
            f"adobe_id_0_21_{next(days)}.sync": "".join(f"{UUIDS[n]}\tu{n}\n" for n in range(30))
            + "1234\tbad-uuid\n"
        },
        {f"ftp_dpm_22_{next(days)}.sync": "c7\td_sid=90\nc8\td_sid=90\n"},  # pending
        {f"adobe_id_0_22_{next(days)}.sync": f"{UUIDS[7]}\tc7\n{UUIDS[8]}\tc8\n"},
        {
            f"ftp_dpm_21_{next(days)}.sync": "".join(
                f"u{n}\td_sid=10{',d_sid=11' if n % 2 else ''}\n" for n in range(30)
            )
            + "nobody\td_sid=10\nu3\td_sid=99\nno tab here\n"
            + "u4\td_sid=10\n" * 205  # over the line cap
        },
        {
            f"ftp_dpm_21_{next(days)}.sync": "u1\td_unsid=10\nu2\td_sid=12\nu2\td_unsid=12\n"
            "u3\td_unsid=11\nu5\td_sid=10,10:0\n"
        },
        {f"ftp_dpm_21_{next(days)}.overwrite": "u6\td_sid=12\nu7\td_sid=11,d_unsid=11\n"},
        {
            f"ftp_dpm_31_{next(days)}.sync": f"{UUIDS[35]}\td_sid=40\n{UUIDS[1]}\td_sid=40\n"
            "123\td_sid=40\n"
        },
    ]
    receipts = []
    starts: list[float] = []
    for files in deliveries:
        # Apart by more than a second: a realization time (whole seconds) of one delivery
        # is never taken for one of the next (see _labelled).
        time.sleep(1.2)
        starts.append(time.time())
        paths = []
        for name, text in files.items():
            path = folder / name
            path.write_text(text)
            paths.append(str(path))
        receipts.append(_ingest(paths))

    time.sleep(1.2)
    starts.append(time.time())
    call_command("segments_rebuild", verbosity=0)
    written = _written()
    written["receipts"] = receipts
    if os.environ.get("SCENARIO_EXPORTS"):
        # Not yet on Citus: the export's join of memberships (by profile) to profiles (by
        # UUID) inside COPY is refused there (README "Scaling out", what is not done yet).
        written["exports"] = _exports(partner, folder)
    written["viewer"] = _viewer()
    labelled = _labelled(written, starts)
    out.write_text(json.dumps(labelled, indent=1, sort_keys=True, ensure_ascii=False))


def _ingest(paths: list[str]) -> list[dict[str, Any]]:
    import io

    from django.core.management import call_command

    text = io.StringIO()
    call_command("ingest", *paths, "--json", stdout=text, stderr=io.StringIO())
    receipts = [json.loads(line) for line in text.getvalue().splitlines()]
    for receipt in receipts:
        for key in ("job_start", "job_end"):
            receipt.pop(key, None)
    return receipts


def _written() -> dict[str, Any]:
    from partners.models import IDMapping, LineError, PendingRecord
    from segments.models import ProfileTraits, SegmentMembership, SegmentMembershipChange

    return {
        "profile_traits": sorted(
            [t.profile.uuid, t.data_source_id, {k: ("T", v) for k, v in t.realized.items()}]
            for t in ProfileTraits.objects.select_related("profile")
        ),
        "memberships": sorted(
            [m.profile.uuid, m.segment_id, ("T", m.joined_at.timestamp())]
            for m in SegmentMembership.objects.select_related("profile")
        ),
        "changes": sorted(
            [c.profile.uuid, c.segment_id, c.joined, ("T", c.at.timestamp())]
            for c in SegmentMembershipChange.objects.select_related("profile")
        ),
        "mappings": sorted(
            [m.data_source_id, m.dpuuid, m.profile.uuid]
            for m in IDMapping.objects.select_related("profile")
        ),
        "pending": sorted(
            [p.data_source_id, p.dpuuid, p.target_id, p.adds] for p in PendingRecord.objects.all()
        ),
        "line_errors": sorted(
            [e.file_name, e.line_number, e.kind, e.reason, e.line_start]
            for e in LineError.objects.all()
        ),
    }


def _exports(partner: Any, folder: Path) -> dict[str, Any]:
    from partners.models import Destination, DestinationSegment, InboundChannel
    from partners.outbound.runs import outbound_run

    zone = folder / "zone"
    channel = InboundChannel.objects.create(
        partner=partner, name="zone", kind="local", prefix=str(zone)
    )
    exported: dict[str, Any] = {}
    for id_column in ("uuid", "dpuuid"):
        destination = Destination.objects.create(
            partner=partner,
            name=f"Acme {id_column}",
            channel=channel,
            id_column=id_column,
            id_data_source_id=21 if id_column == "dpuuid" else None,
            folder=id_column,
        )
        for sid in (500, 501, 502, 503):
            DestinationSegment.objects.create(
                destination=destination,
                segment_id=sid,
                value=f"s{sid}",
                start_date=date(2020, 1, 1),
            )
        for mode in ("full", "iter"):
            run = outbound_run(destination=destination, mode=mode)
            exported[f"{id_column}-{mode}"] = [run.status, run.records_received]
        files = sorted((zone / "acme" / id_column).rglob("*"))
        exported[id_column] = sorted(
            sorted(_lines(path)) for path in files if path.is_file() and ".info" not in path.name
        )
    return exported


def _lines(path: Path) -> list[str]:
    import gzip

    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode().splitlines()


def _viewer() -> dict[str, Any]:
    import io

    from django.core.management import call_command

    text = io.StringIO()
    call_command("profile_show", "21:u1", "--json", stdout=text)
    shown = json.loads(text.getvalue())
    for entries in shown.values():  # its times are the clock's: left out
        for entry in entries if isinstance(entries, list) else []:
            for key in ("expires", "realized", "first_seen", "last_seen", "since"):
                entry.pop(key, None)
    return shown


def dump(out: Path) -> None:
    """What is stored now (after a rebalance: the same as before it)."""
    django.setup()
    written = {**_written(), "viewer": _viewer()}
    out.write_text(json.dumps(_labelled(written, []), indent=1, sort_keys=True))


def _labelled(value: Any, starts: list[float]) -> Any:
    """Each time (a ``("T", seconds)`` pair) written as the step of the play that wrote it:
    the last one started before it (a second of slack for times kept in whole seconds)."""

    def replace(node: Any) -> Any:
        if isinstance(node, tuple) and len(node) == 2 and node[0] == "T":
            steps = [n for n, start in enumerate(starts) if start - 1 <= float(node[1])]
            return f"step {steps[-1] if steps else 'before'}"
        if isinstance(node, dict):
            return {k: replace(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [replace(item) for item in node]
        return node

    return replace(value)


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(Path(sys.argv[2]))
    else:
        play(Path(sys.argv[1]), Path(sys.argv[2]))
