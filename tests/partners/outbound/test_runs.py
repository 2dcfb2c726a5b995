"""Outbound runs: files rendered from real memberships, split, gzipped, the .info control file
checked by reading the files back, iter over three days, a failed run then its retry, and
delivery to a local folder and to a real S3 API (moto server)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from partners.models import Destination, DestinationSegment, InboundChannel, OutboundRun
from partners.outbound.runs import outbound_run
from tests.conftest import s3_client
from tests.factories import IDMappingFactory, SegmentFactory
from tests.partners.inbound.conftest import Deliver, World


def _destination(world: World, folder: Path, **fields: Any) -> Destination:
    channel = InboundChannel.objects.create(
        partner=world.partner, name="zone", kind="local", prefix=str(folder)
    )
    destination = Destination.objects.create(
        partner=world.partner, name="Acme daily", channel=channel, **fields
    )
    for sid, value in ((500, "tens"), (501, "elevens")):
        segment = SegmentFactory.create(sid=sid, data_source=world.source, rule=f"{sid - 490}T")
        DestinationSegment.objects.create(
            destination=destination, segment=segment, value=value, start_date=date(2026, 1, 1)
        )
    return destination


def _files(folder: Path) -> dict[str, bytes]:
    out = folder / "acme" / "outbound"
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())} if out.exists() else {}


def _check_info(files: dict[str, bytes]) -> dict[str, Any]:
    """The .info totals and every md5, checked against the delivered files."""
    [info_name] = [name for name in files if name.endswith(".info")]
    info = json.loads(files[info_name])
    for entry in info["Files"]:
        data = files[entry["FileName"]]
        assert entry["FileByteSize"] == len(data)
        assert entry["md5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
        plain = gzip.decompress(data) if entry["FileName"].endswith(".gz") else data
        assert entry["FileLineCount"] == len(plain.splitlines())  # every line, as written
    totals = info["Totals"]
    assert totals["FileName"] == info_name
    assert totals["TotalNumberFiles"] == len(info["Files"]) == len(files) - 1
    assert totals["TotalNumberLines"] == sum(e["FileLineCount"] for e in info["Files"])
    assert totals["TotalByteSize"] == sum(e["FileByteSize"] for e in info["Files"])
    return info


def test_a_full_run_writes_every_member_then_the_info(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\nu2\td_sid=11\nu9\td_sid=10\n"})
    run = outbound_run(destination=destination)
    assert (run.status, run.records_received, run.records_successful) == ("succeeded", 2, 2)
    files = _files(tmp_path)
    stamp = int(run.started_at.timestamp() * 1000)
    data_name = f"s3_{destination.pk}_21_full_{stamp}.sync"
    assert set(files) == {data_name, f"s3_{destination.pk}_21_full_{stamp}.info"}
    assert sorted(files[data_name].decode().splitlines()) == sorted(
        [f"{world.u1.uuid} 500,501 ", f"{world.u2.uuid} 501 "]
    )
    info = _check_info(files)
    assert [e["FileSequenceNumber"] for e in info["Files"]] == [1]


def test_parts_gzip_a_header_and_dpuuids(world: World, deliver: Deliver, tmp_path: Path) -> None:
    destination = _destination(
        world,
        tmp_path,
        id_column="dpuuid",
        id_data_source=world.source,
        row_template='<DP_UUID><TAB><SEGMENT_LIST:{s|<s.alias>}; separator=";">',
        header_template="ID<TAB>SEGMENTS",
        gzip=True,
        max_part_bytes=25,  # the header (12 bytes) and one row (8) per part
    )
    lines = "".join(f"u{n}\td_sid=10\n" for n in (1, 2))
    deliver({"ftp_dpm_21_1700000000.sync": lines})
    run = outbound_run(destination=destination)
    files = _files(tmp_path)
    data = sorted(name for name in files if name.endswith(".gz"))
    assert [name.split(".sync")[0][-3:] for name in data] == ["001", "002"]  # SPLITNUM
    rows = [gzip.decompress(files[name]).decode() for name in data]
    # One row per part, in no set order (the SPEC sets none; Citus reads shards in turn).
    assert sorted(rows) == ["ID\tSEGMENTS\nu1\ttens\n", "ID\tSEGMENTS\nu2\ttens\n"]
    assert _check_info(files)["Totals"]["TotalNumberLines"] == 4 == run.lines  # with headers


@pytest.mark.parametrize(
    "row_template",
    [
        '<UUID> <SEGMENT_LIST;separator=",">',  # rendered by PostgreSQL
        '<UUID><TAB><DP_UUID_LIST;separator=",">',  # rendered in Python
    ],
)
def test_the_info_counts_every_line_of_each_file_as_written(
    world: World, deliver: Deliver, tmp_path: Path, row_template: str
) -> None:
    """SPEC §6: a file's FileLineCount is its lines, the header each part starts with
    included, and TotalNumberLines their sum; read back from the gzipped parts."""
    from partners.outbound.templates import compile_row_template

    for n in range(3, 8):
        IDMappingFactory.create(data_source=world.source, dpuuid=f"u{n}")
    destination = _destination(
        world,
        tmp_path,
        id_data_source=world.source,
        row_template=row_template,
        header_template="ID<TAB>SEGMENTS",
        gzip=True,
        max_part_bytes=120,  # the header and two rows of 38-digit UUIDs a part
    )
    uses_sql = compile_row_template(row_template).sql is not None
    assert uses_sql == ("DP_UUID_LIST" not in row_template)  # both render paths are covered
    deliver({"ftp_dpm_21_1700000000.sync": "".join(f"u{n}\td_sid=10\n" for n in range(1, 8))})
    run = outbound_run(destination=destination)
    files = _files(tmp_path)
    info = _check_info(files)
    parts = [gzip.decompress(files[entry["FileName"]]) for entry in info["Files"]]
    assert len(parts) == 4  # 7 members, two a part: SPLITNUM 001 to 004
    assert [name.split(".sync")[0][-3:] for name in sorted(files) if name.endswith(".gz")] == [
        "001",
        "002",
        "003",
        "004",
    ]
    assert all(part.startswith(b"ID\tSEGMENTS\n") for part in parts)
    written = [len(part.splitlines()) for part in parts]
    assert [entry["FileLineCount"] for entry in info["Files"]] == written == [3, 3, 3, 2]
    assert info["Totals"]["TotalNumberLines"] == sum(written) == 7 + 4  # members + headers
    assert run.lines == sum(written)
    assert list(run.files.order_by("sequence").values_list("lines", flat=True)) == written


@pytest.mark.django_db(transaction=True)
def test_iter_over_three_days_with_a_failed_run_between(tmp_path: Path, deliver: Deliver) -> None:
    world = World()
    destination = _destination(world, tmp_path, mode="iter")

    def rows(run: OutboundRun) -> list[str]:
        name = run.files.get().name
        return sorted(_files(tmp_path)[name].decode().splitlines())

    deliver({"ftp_dpm_21_1700000001.sync": "u1\td_sid=10\n"})  # day 1
    first = outbound_run(destination=destination)
    assert rows(first) == [f"{world.u1.uuid} 500 "]  # no run before: every member

    deliver({"ftp_dpm_21_1700000002.sync": "u2\td_sid=10\nu1\t10:0\n"})  # day 2
    second = outbound_run(destination=destination)
    assert second.since == first.started_at
    assert rows(second) == sorted([f"{world.u2.uuid} 500 ", f"{world.u1.uuid}  500"])

    deliver({"ftp_dpm_21_1700000003.sync": "u1\td_sid=11\n"})  # day 3
    blocker = tmp_path / "acme"
    (blocker / "outbound").rename(tmp_path / "kept")  # the folder becomes a file: runs fail
    (blocker / "outbound").write_text("not a folder")
    with pytest.raises(OSError, match=r"Not a directory|File exists"):
        outbound_run(destination=destination)
    failed = destination.runs.first()
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error
    (blocker / "outbound").unlink()
    (tmp_path / "kept").rename(blocker / "outbound")
    retry = outbound_run(destination=destination)
    assert retry.since == second.started_at  # the last *successful* run
    assert rows(retry) == [f"{world.u1.uuid} 501 "]
    assert not [name for name in _files(tmp_path) if name.endswith(".partial")]


def test_delivery_to_a_real_s3_api(
    world: World, deliver: Deliver, tmp_path: Path, s3_endpoint: str, s3_bucket: str, settings: Any
) -> None:
    destination = _destination(world, tmp_path)
    settings.S2S_CREDENTIALS_OUTBOUND_TEST_S3 = "testing:testing"
    channel = InboundChannel.objects.create(
        partner=world.partner,
        name="bucket",
        kind="s3",
        bucket=s3_bucket,
        prefix="exchange",
        region="us-east-1",
        endpoint_url=s3_endpoint,
        credentials_ref="S2S_CREDENTIALS_OUTBOUND_TEST_S3",
    )
    destination.channel = channel
    destination.save()
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    run = outbound_run(destination=destination)
    s3 = s3_client(s3_endpoint)
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="exchange/acme/outbound/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    [data] = run.files.all()
    assert keys == sorted(
        [f"exchange/acme/outbound/{data.name}", f"exchange/acme/outbound/{data.name[:-5]}.info"]
    )
    body = s3.get_object(Bucket=s3_bucket, Key=f"exchange/acme/outbound/{data.name}")["Body"]
    assert body.read().decode() == f"{world.u1.uuid} 500 \n"


def test_the_preview_says_whether_its_rows_are_real_members_or_a_sample(
    world: World, deliver: Deliver, tmp_path: Path, admin_client: Any
) -> None:
    """Before: the preview was labelled "with made-up rows" even when it showed real ones."""
    import html

    destination = _destination(world, tmp_path)
    url = f"/admin/partners/destination/{destination.pk}/change/"

    def shown() -> tuple[str, list[str]]:
        page = admin_client.get(url).content.decode()
        source = page.split('id="destination-preview-source">')[1].split("</p>")[0]
        rows = page.split('id="destination-preview">')[1].split("</pre>")[0]
        return html.unescape(source), html.unescape(rows).splitlines()[1:]

    source, rows = shown()
    assert source == (
        "The saved templates, rendered from a made-up member (a sample):"
        " no one is in its segments yet."
    )
    assert rows == [f"{'1' * 38} 500 "]

    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    assert shown() == (
        "The saved templates, rendered from 1 real member.",
        [f"{world.u1.uuid} 500 "],
    )
    deliver({"ftp_dpm_21_1700000001.sync": "u2\td_sid=10,d_sid=11\n"})
    source, rows = shown()
    assert source == "The saved templates, rendered from 2 real members."
    assert sorted(rows) == sorted([f"{world.u1.uuid} 500 ", f"{world.u2.uuid} 500,501 "])


def test_the_admin_refuses_a_wrong_template_and_previews_a_good_one(
    world: World, deliver: Deliver, tmp_path: Path, admin_client: Any
) -> None:
    import html

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    url = f"/admin/partners/destination/{destination.pk}/change/"
    page = admin_client.get(url).content.decode()
    preview = html.unescape(page.split('id="destination-preview">')[1].split("</pre>")[0])
    assert preview.splitlines()[1] == f"{world.u1.uuid} 500 "  # a real member, rendered
    form = {
        "partner": world.partner.pk,
        "name": "Acme daily",
        "active": "on",
        "channel": destination.channel_id,
        "folder": "outbound",
        "daily_at": "14:00",
        "mode": "full",
        "sync_type": "s3",
        "id_column": "uuid",
        "file_name_template": "<SYNC_TYPE>_<ORDER>.sync",
        "row_template": "<UUID> <SEGMENT_LIST",
        "max_part_bytes": 1000,
        "mapped-TOTAL_FORMS": 0,
        "mapped-INITIAL_FORMS": 0,
    }
    answer = html.unescape(admin_client.post(url, form).content.decode())
    assert "unknown macro 'ORDER'" in answer
    assert "(at column 14)" in answer
    assert "the tag opened at column 8 is not closed with '>'" in answer


def test_the_command_runs_one_destination(world: World, deliver: Deliver, tmp_path: Path) -> None:
    import io

    from django.core.management import call_command

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    out = io.StringIO()
    call_command("outbound_run", "--destination", str(destination.pk), stdout=out)
    assert out.getvalue().startswith(f"destination {destination.pk}: 1 file(s), 1 line(s)")


def test_a_failed_daily_run_alerts_and_a_past_run_can_be_sent_again(
    world: World,
    deliver: Deliver,
    tmp_path: Path,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from datetime import timedelta

    import django_rq
    from django.core import mail
    from django.utils import timezone

    from partners.outbound.runs import outbound_run_resend, outbound_runs_due
    from partners.receipts.alerts import alert_send

    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    destination = _destination(world, tmp_path, daily_at="00:00")
    # Made yesterday: today's 00:00 is one of its daily times.
    Destination.objects.filter(pk=destination.pk).update(
        created_at=timezone.now() - timedelta(days=1)
    )
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "outbound").write_text("in the way")  # the run cannot deliver
    notify = django_rq.get_queue("notify")
    notify.empty()
    with django_capture_on_commit_callbacks(execute=True):
        [failed] = outbound_runs_due(now=timezone.now())
    assert failed.status == "failed"
    [job] = [job for job in notify.jobs if job.func is alert_send]
    mail.outbox.clear()
    job.perform()
    [alert] = mail.outbox
    assert alert.subject == (
        f"[S2S ALERT] outbound run failed: Acme Data, destination {destination.pk}"
    )
    assert "No .info was delivered" in alert.body

    (tmp_path / "acme" / "outbound").unlink()
    assert outbound_runs_due(now=timezone.now()) == []  # it failed a moment ago: backing off
    later = timezone.now() + timedelta(seconds=settings.OUTBOUND_RETRY_SECONDS)
    [done] = outbound_runs_due(now=later)
    assert done.status == "succeeded"
    assert outbound_runs_due(now=later) == []  # once a day
    again = outbound_run_resend(run=done)
    assert (again.mode, again.since, again.until) == (done.mode, done.since, done.started_at)
    assert again.lines == done.lines == 1


def test_files_of_runs_older_than_eight_days_are_purged(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from partners.outbound.runs import outbound_purge

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    old = outbound_run(destination=destination)
    new = outbound_run(destination=destination)
    OutboundRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=9))
    assert len(_files(tmp_path)) == 4
    assert outbound_purge().deleted == 2  # the old run's data file and its .info
    assert set(_files(tmp_path)) == {new.files.get().name, new.info_name}
    old.refresh_from_db()
    assert old.purged_at is not None
    assert old.files.count() == 1  # the history stays


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_midway_with_sigkill_then_retried(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import django_rq
    import psutil
    from django.db import connection

    from partners.outbound.jobs import outbound_run_job
    from partners.outbound.runs import OutboundRunInProgress
    from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment

    world = World()
    destination = _destination(world, tmp_path, max_part_bytes=4_000_000)
    members = 500_000  # about a second of rendering: time to be killed in the middle
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH made AS (INSERT INTO segments_profile (uuid, created_at)"
            "  SELECT '7' || lpad(n::text, 37, '0'), now() FROM generate_series(1, %s) n"
            "  RETURNING id)"
            " INSERT INTO segments_segmentmembership (profile_id, segment_id, joined_at)"
            " SELECT id, 500, now() FROM made",
            [members],
        )
    queue = django_rq.get_queue("outbound")
    queue.empty()
    queue.enqueue(outbound_run_job, destination.pk)
    worker = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "outbound", "--burst"],
        env=worker_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not destination.runs.exists():
        assert time.monotonic() < deadline, "the worker never started the run"
        time.sleep(0.01)
    time.sleep(0.2)
    # What a host or container dying does: the worker and its work horse (RQ forks the
    # horse into a session of its own) die at once, without a word.
    for process in [*psutil.Process(worker.pid).children(recursive=True), worker]:
        os.kill(process.pid, signal.SIGKILL)
    worker.wait(timeout=10)

    killed = destination.runs.get()
    assert killed.status == "running"  # killed before it could say anything
    assert not [name for name in _files(tmp_path) if not name.endswith(".partial")]

    deadline = time.monotonic() + 10
    while True:  # PostgreSQL lets go of the dead worker's lock as it notices the hang-up
        try:
            retry = outbound_run(destination=destination)
            break
        except OutboundRunInProgress:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    killed.refresh_from_db()
    assert (killed.status, killed.error) == (
        "failed",
        "interrupted: the run stopped before it ended (its worker stopped, or lost the database)",
    )
    assert (retry.status, retry.lines, retry.records_successful) == ("succeeded", members, members)
    files = _files(tmp_path)
    assert sorted(files) == sorted([*retry.files.values_list("name", flat=True), retry.info_name])
    assert _check_info(files)["Totals"]["TotalNumberLines"] == members
    rows = b"".join(data for name, data in files.items() if name != retry.info_name)
    assert len(set(rows.splitlines())) == members  # every member once


def test_a_killed_runs_leftovers_are_deleted_and_a_live_run_is_left_alone(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    import psycopg
    from django.db import connection
    from django.utils import timezone

    from partners.locks import OUTBOUND_RUN_LOCK
    from partners.outbound.runs import OutboundRunInProgress, outbound_runs_due

    destination = _destination(world, tmp_path, mode="iter")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    started = timezone.now()
    killed = OutboundRun.objects.create(destination=destination, mode="iter", started_at=started)
    stamp = int(started.timestamp() * 1000)
    folder = tmp_path / "acme" / "outbound"
    folder.mkdir(parents=True)
    leftover = folder / f"s3_{destination.pk}_21_iter_{stamp}.sync.partial"
    leftover.write_text("half a fi")
    foreign = folder / "partner-notes.txt.partial"  # not a name this destination writes
    foreign.write_text("theirs")

    # While another worker holds the destination, its "running" run is alive: no second run.
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or None, port=db["PORT"] or None, user=db["USER"], dbname=db["NAME"]
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [OUTBOUND_RUN_LOCK, destination.pk])
        with pytest.raises(OutboundRunInProgress, match="is being exported right now"):
            outbound_run(destination=destination)
        assert outbound_runs_due(now=started.replace(hour=23, minute=59)) == []  # skipped
    killed.refresh_from_db()
    assert killed.status == "running"

    run = outbound_run(destination=destination)  # the holder is gone: that run was killed
    killed.refresh_from_db()
    assert (killed.status, killed.error) == (
        "failed",
        "interrupted: the run stopped before it ended (its worker stopped, or lost the database)",
    )
    assert run.since is None  # no run ever succeeded: every member
    assert run.lines == 1
    assert sorted(_files(tmp_path)) == sorted([run.files.get().name, run.info_name, foreign.name])


@pytest.mark.parametrize(
    "source",
    [
        '<UUID> <SEGMENT_LIST;separator=","> <REMOVED_SEGMENT_LIST;separator=",">',
        '<OPEN_CURLY_BRACKET>"uuid":"<UUID>","s":[<SEGMENT_LIST:{s|"<s.alias>"}; separator=",">]'
        "<CLOSE_CURLY_BRACKET>",
        "<UUID><TAB><SEGMENT_LIST:{seg|<seg.sid>,<seg.lastUpdateTime>,<seg.type>,"
        '<seg.lastRealizationTime>}; separator=";"><ASCII_SOH><PID>,<PIDALIAS>,<DPID>,<ORDER_ID>',
        "<UUID><if(SEGMENT_LIST && REMOVED_SEGMENT_LIST)> both<endif><if(SEGMENT_LIST)> in<endif>"
        " 100% <SET_ATTRIBUTES>'quoted'<COMMA>",
        '<DP_UUID>|<SEGMENT_LIST:{s|<PIDALIAS>-<s.sid>=<s.alias>}; separator="%">|'
        '<REMOVED_SEGMENT_LIST:{s|<s.alias>@<s.lastUpdateTime>}; separator=",">'
        '<if(REMOVED_SEGMENT_LIST)>|<REMOVED_SEGMENT_LIST;separator="">|<SEGMENT_LIST><endif>',
    ],
)
@pytest.mark.parametrize("mode", ["full", "iter"])
@pytest.mark.parametrize("id_column", ["uuid", "dpuuid"])
@pytest.mark.django_db(transaction=True)  # each delivery's changes at their own time (iter)
def test_rendering_in_postgresql_equals_rendering_in_python(
    deliver: Deliver, tmp_path: Path, source: str, mode: str, id_column: str
) -> None:
    from partners.outbound import runs as services
    from partners.outbound.templates import compile_row_template

    world = World()
    template = compile_row_template(source)
    assert template.sql is not None
    destination = _destination(
        world,
        tmp_path,
        row_template=source,
        pid_alias="ac'me%\\t\\",  # a backslash before a t, and at the end
        mode=mode,
        id_column=id_column,
        id_data_source=world.source,
    )
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\nu2\td_sid=11\n"})
    outbound_run(destination=destination)
    deliver({"ftp_dpm_21_1700000001.sync": "u1\t10:0\nu2\td_sid=10\n"})  # a leave, a join
    sql_run = outbound_run(destination=destination)
    assert (sql_run.mode, sql_run.since is None) == (mode, mode == "full")
    by_sql = sorted(_files(tmp_path)[sql_run.files.get().name].decode().splitlines())

    python_folder = tmp_path / "python"
    python_folder.mkdir(exist_ok=True)
    run = OutboundRun.objects.create(
        destination=destination,
        mode=mode,
        since=sql_run.since,
        until=sql_run.until,
        started_at=sql_run.started_at,
    )
    services._render_and_deliver(destination, run, python_folder, force_python=True)
    by_python = sorted(_files(tmp_path)[run.files.get().name].decode().splitlines())
    assert by_sql == by_python
    assert len(by_sql) == 2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '<UUID><TAB><DP_UUID_LIST;separator="|"><TAB><TRAIT_LIST:{t|<t.traitId>}>',
            "{uuid}\tu1\t1011\n",
        ),
        # One line per membership: the item names the row's UUID.
        ('<SEGMENT_LIST:{s|<UUID>,<s.sid>}; separator="\\n">', "{uuid},500\n{uuid},501\n"),
        ("<UUID> <SEGMENT_LIST:{s|<if(REMOVED_SEGMENT_LIST)>-<endif><s.sid>}>", "{uuid} 500501\n"),
    ],
)
def test_templates_sql_cannot_render_fall_back_to_python(
    world: World, deliver: Deliver, tmp_path: Path, source: str, expected: str
) -> None:
    from partners.outbound.templates import compile_row_template

    assert compile_row_template(source).sql is None
    destination = _destination(world, tmp_path, row_template=source, id_data_source=world.source)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\n"})
    run = outbound_run(destination=destination)
    text = _files(tmp_path)[run.files.get().name].decode()
    assert text == expected.format(uuid=world.u1.uuid)
    assert run.lines == text.count("\n")  # the .info counts lines, not rows


def test_a_wrong_header_template_is_refused_on_save(world: World, tmp_path: Path) -> None:
    from django.core.exceptions import ValidationError

    destination = _destination(world, tmp_path, header_template="ID<TAB><NOPE>")
    with pytest.raises(ValidationError, match="unknown macro 'NOPE'"):
        destination.full_clean()


@pytest.mark.parametrize(
    ("folder", "error"),
    [
        ("/", "a folder under the partner's folder (inbound files arrive there)"),
        ("date=2026-11-28/out", "date=… folders are where the partner's inbound files arrive"),
        ("out/../../other", "a plain folder path: no empty, '.' or '..' steps"),
        ("out\\daily", "a plain folder path: no backslash, a path separator on Windows servers"),
        ("..\\other", "a plain folder path: no backslash, a path separator on Windows servers"),
    ],
)
def test_a_destination_folder_that_the_poller_reads_or_that_leaves_the_partner_is_refused(
    world: World, tmp_path: Path, folder: str, error: str
) -> None:
    from django.core.exceptions import ValidationError

    destination = _destination(world, tmp_path)
    destination.folder = folder
    with pytest.raises(ValidationError) as caught:
        destination.full_clean()
    assert caught.value.message_dict == {"folder": [error]}


def test_the_database_refuses_a_destination_folder_with_a_backslash(
    world: World, tmp_path: Path
) -> None:
    """Written around the model (a raw update, a script), a backslash is still refused."""
    from django.db import IntegrityError, transaction

    destination = _destination(world, tmp_path)
    with (
        pytest.raises(IntegrityError, match="destination_folder_no_backslash"),
        transaction.atomic(),
    ):
        Destination.objects.filter(pk=destination.pk).update(folder="out\\daily")


def test_an_iter_destination_whose_last_success_is_older_than_the_change_log_gets_a_full_run(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    destination = _destination(world, tmp_path, mode="iter")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=11\n"})
    first = outbound_run(destination=destination)
    assert first.mode == "iter"
    recent = outbound_run(destination=destination)
    assert (recent.mode, recent.since, recent.lines) == ("iter", first.started_at, 0)
    # A month without a successful run: the changes since may be pruned already.
    destination.runs.update(started_at=timezone.now() - timedelta(days=31))
    late = outbound_run(destination=destination)
    assert (late.mode, late.since, late.lines) == ("full", None, 2)
    assert "_full_" in late.files.get().name


def test_run_now_and_send_again_in_the_admin_queue_jobs_a_worker_runs(
    world: World,
    deliver: Deliver,
    tmp_path: Path,
    admin_client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    import django_rq
    from rq import SimpleWorker

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    queue = django_rq.get_queue("outbound")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues on commit
        admin_client.post(
            "/admin/partners/destination/",
            {"action": "run_now", "_selected_action": [destination.pk]},
        )
    [job] = queue.jobs
    assert job.timeout == 4 * 3600
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    first = destination.runs.get()
    assert (first.status, first.lines) == ("succeeded", 1)

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/partners/outboundrun/",
            {"action": "resend", "_selected_action": [first.pk]},
        )
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    again = destination.runs.first()
    assert again is not None
    assert (again.pk != first.pk, again.status, again.until) == (
        True,
        "succeeded",
        first.started_at,
    )


def test_run_now_on_the_destination_s_page_queues_the_run_a_worker_runs(
    world: World,
    deliver: Deliver,
    tmp_path: Path,
    admin_client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The README's *Run now* in its admin page: a button there, as well as the list's
    action. Before: the page had no such button (and no URL to post to)."""
    import django_rq
    from django.urls import reverse
    from rq import SimpleWorker

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    queue = django_rq.get_queue("outbound")
    queue.empty()
    url = reverse("admin:partners_destination_run_now", args=[destination.pk])
    page = admin_client.get(reverse("admin:partners_destination_change", args=[destination.pk]))
    assert f'<form method="post" action="{url}">' in page.content.decode()
    assert admin_client.get(url).status_code == 405  # a run is queued by a POST only
    assert queue.count == 0

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, follow=True)
    assert response.redirect_chain[-1][0].endswith(f"/destination/{destination.pk}/change/")
    assert [str(m) for m in response.context["messages"]] == ["1 destination queued."]
    [job] = queue.jobs
    assert (job.func_name, job.args, job.timeout) == (
        "partners.outbound.jobs.outbound_run_job",
        (destination.pk,),
        4 * 3600,
    )
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert (destination.runs.get().status, destination.runs.get().lines) == ("succeeded", 1)


def test_run_now_needs_the_right_to_change_the_destination(
    world: World, tmp_path: Path, client: Any
) -> None:
    from django.contrib.auth.models import Permission, User
    from django.urls import reverse

    destination = _destination(world, tmp_path)
    viewer = User.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_destination"))
    client.force_login(viewer)
    url = reverse("admin:partners_destination_run_now", args=[destination.pk])
    page = client.get(reverse("admin:partners_destination_change", args=[destination.pk]))
    assert page.status_code == 200
    assert url not in page.content.decode()
    assert client.post(url).status_code == 403
    listing = client.get(reverse("admin:partners_destination_changelist"))
    assert "run_now" not in listing.content.decode()


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("../acme/inbound/x_<TIMESTAMP>.sync", "cannot hold '/', '\\' or '..'"),
        ("../../globex/date=2026-01-01/ftp_dpm_22_<TIMESTAMP>.sync", "cannot hold '/'"),
        ("/srv/other/x_<TIMESTAMP>.sync", "cannot hold '/'"),
        ("..x_<TIMESTAMP>.sync", "cannot hold '/', '\\' or '..'"),
        ("x\\..\\y_<TIMESTAMP>.sync", "cannot hold '/', '\\' or '..'"),
        ('x_<TIMESTAMP; format="yyyy/MM/dd">.sync', "cannot hold '/'"),  # the date format too
        ("x\x07_<TIMESTAMP>.sync", "cannot hold control characters (U+0007"),
        ("x\x9b_<TIMESTAMP>.sync", "cannot hold control characters (U+009B"),
        ("x\x7f_<TIMESTAMP>.sync", "cannot hold control characters (U+007F"),
    ],
)
def test_a_file_name_template_that_leaves_the_folder_is_refused_on_save(
    world: World, tmp_path: Path, template: str, error: str
) -> None:
    from django.core.exceptions import ValidationError

    destination = _destination(world, tmp_path)
    destination.file_name_template = template
    with pytest.raises(ValidationError) as caught:
        destination.full_clean()
    [message] = caught.value.message_dict["file_name_template"]
    assert error in message
    assert "the destination's folder is set apart" in message or "control" in message


def test_file_names_with_dates_and_a_plain_alias_are_fine_and_an_alias_with_a_path_is_not(
    world: World, tmp_path: Path
) -> None:
    from django.core.exceptions import ValidationError

    destination = _destination(
        world,
        tmp_path,
        file_name_template='<PID_ALIAS>_<TIMESTAMP; format="yyyy-MM-dd_HH.mm.ss">SPLITNUM.sync',
        pid_alias="acme-eu",
    )
    destination.full_clean()
    destination.pid_alias = "../../globex"
    with pytest.raises(ValidationError) as caught:
        destination.full_clean()
    [message] = caught.value.message_dict["pid_alias"]
    assert message.startswith("used in the file names: a file name cannot hold '/'")


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"file_name_template": "../../globex/date=2026-01-01/x_<TIMESTAMP>.sync"}, "../../globex"),
        ({"file_name_template": "<PID_ALIAS>_<TIMESTAMP>.sync", "pid_alias": "../../globex"}, ".."),
        # (NUL cannot be stored: PostgreSQL text refuses it; the check refuses it too.)
        ({"file_name_template": "x\x1b[2J_<TIMESTAMP>.sync"}, "control characters (U+001B"),
    ],
)
def test_a_stored_template_that_renders_a_path_fails_its_run_and_writes_nothing(
    world: World, deliver: Deliver, tmp_path: Path, fields: dict[str, str], shown: str
) -> None:
    from partners.outbound.parts import OutboundFileNameRefused

    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    other_inbound = tmp_path / "globex" / "date=2026-01-01"
    other_inbound.mkdir(parents=True)
    # Saved before the check existed (or by a raw update): clean never saw it.
    Destination.objects.filter(pk=destination.pk).update(**fields)
    destination.refresh_from_db()
    with pytest.raises(OutboundFileNameRefused, match="nothing was delivered"):
        outbound_run(destination=destination)
    run = destination.runs.get()
    assert run.status == "failed"
    assert run.error.startswith("nothing was delivered: ")
    assert shown in run.error
    assert run.files.count() == 0
    written = [p for top in ("acme", "globex") for p in (tmp_path / top).rglob("*") if p.is_file()]
    assert written == []  # nothing in the other partner's folder, nor in its own


def test_a_destination_failing_every_poll_alerts_once_a_utc_day_and_backs_off(
    world: World,
    deliver: Deliver,
    tmp_path: Path,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from datetime import UTC, datetime, timedelta

    import django_rq
    from django.core import mail
    from rq import SimpleWorker

    from partners.outbound.runs import outbound_runs_due

    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    settings.OUTBOUND_RETRY_SECONDS, settings.OUTBOUND_RETRY_MAX_SECONDS = 300, 3600
    destination = _destination(world, tmp_path, daily_at="09:00")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "outbound").write_text("in the way")  # every run fails
    notify = django_rq.get_queue("notify")
    notify.empty()
    mail.outbox.clear()

    def poll(at: datetime) -> int:
        """One poll of the daily schedule, its alerts sent by a real RQ worker."""
        with django_capture_on_commit_callbacks(execute=True):
            runs = outbound_runs_due(now=at)
        SimpleWorker([notify], connection=notify.connection).work(burst=True)
        assert all(run.status == "failed" for run in runs)
        return len(runs)

    day = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
    minutes = [0, 2, 5, 6, 12, 16, 40, 60, 120, 300, 600, 14 * 60 + 59]
    ran = [poll(day + timedelta(minutes=m)) for m in minutes]
    # Tried at 09:00, then at least 5, 10, 20, 40 minutes after each failure, then hourly.
    assert ran == [1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1]
    assert destination.runs.count() == 8
    [alert] = mail.outbox  # eight failed runs, one e-mail
    assert alert.subject == (
        f"[S2S ALERT] outbound run failed: Acme Data, destination {destination.pk}"
    )
    assert "no other alert about this destination until tomorrow (UTC)" in alert.body

    next_day = day + timedelta(days=1)
    assert poll(next_day) == 1
    assert poll(next_day + timedelta(hours=2)) == 1
    assert len(mail.outbox) == 2  # one more, for the new UTC day

    (tmp_path / "acme" / "outbound").unlink()  # the problem is fixed: the next try succeeds
    [done] = outbound_runs_due(now=next_day + timedelta(hours=4))
    assert done.status == "succeeded"
    destination.refresh_from_db()
    assert (destination.failures_in_a_row, destination.retry_after) == (0, None)


def _dpuuid_stored_as_is(dpuuid: str, stored: str) -> None:
    """The mapping of ``dpuuid`` stored again as ``stored``, bypassing the checks at the entry
    points (a raw write). A new row: Citus does not move a row by an UPDATE of its key."""
    from partners.models import IDMapping

    mapping = IDMapping.objects.get(dpuuid=dpuuid)
    IDMapping.objects.filter(pk=mapping.pk).delete()
    mapping.pk, mapping.dpuuid = None, stored
    IDMapping.objects.bulk_create([mapping])


@pytest.mark.parametrize(
    "source",
    [
        # Rendered by PostgreSQL.
        '<DP_UUID><TAB><SEGMENT_LIST:{s|<s.alias>}; separator=",">:<PIDALIAS>',
        # Rendered in Python (DP_UUID_LIST is not rendered by SQL).
        '<DP_UUID><TAB><DP_UUID_LIST;separator="|"><TAB><SEGMENT_LIST:{s|<s.alias>};'
        ' separator=",">:<PIDALIAS>',
    ],
    ids=["sql", "python"],
)
def test_control_characters_in_partner_values_never_reach_the_file(
    world: World, deliver: Deliver, tmp_path: Path, source: str
) -> None:
    import re

    from partners.outbound.templates import compile_row_template
    from tests.factories import IDMappingFactory

    IDMappingFactory.create(data_source=world.source, dpuuid="u3")
    destination = _destination(
        world,
        tmp_path,
        row_template=source,
        id_column="dpuuid",
        id_data_source=world.source,
        pid_alias="ac\x1bme",
    )
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=11\nu3\td_sid=10\n"})
    # Stored before the checks at the entry points (or by a raw update): bypassing them.
    _dpuuid_stored_as_is("u1", "a\x07b")
    _dpuuid_stored_as_is("u2", "x\x1b[2J")
    destination.mapped.filter(segment_id=500).update(value="te\x85n\ts\x7f")
    assert (compile_row_template(source).sql is None) == (source.count("<TAB>") == 2)

    run = outbound_run(destination=destination)
    data = _files(tmp_path)[run.files.get().name]
    assert re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", data) is None
    assert re.search("[\x80-\x9f]", data.decode()) is None
    expected = "u3\tu3\ttens:acme\n" if "DP_UUID_LIST" in source else "u3\ttens:acme\n"
    assert data.decode() == expected
    # The two rows whose DPUUID holds a control character are not written, and counted.
    assert (run.records_received, run.records_successful, run.records_failed) == (3, 1, 2)


def test_a_dpuuid_with_a_control_character_is_left_out_of_dp_uuid_list(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    from tests.factories import IDMappingFactory

    IDMappingFactory.create(data_source=world.source, dpuuid="q-r", profile=world.u1)
    _dpuuid_stored_as_is("q-r", "q\x07r")
    destination = _destination(
        world,
        tmp_path,
        row_template='<UUID><TAB><DP_UUID_LIST;separator="|">',
        id_data_source=world.source,
    )
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    run = outbound_run(destination=destination)
    assert _files(tmp_path)[run.files.get().name] == f"{world.u1.uuid}\tu1\n".encode()


def test_a_new_destination_first_runs_at_its_next_daily_time_not_at_once(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    """Before: a destination made after its daily time ran at the next poll (the demo fired an
    empty export at start-up)."""
    from datetime import UTC, datetime, timedelta

    from partners.outbound.runs import outbound_runs_due

    made = datetime(2031, 3, 1, 15, 0, tzinfo=UTC)
    destination = _destination(world, tmp_path, daily_at="14:00")
    Destination.objects.filter(pk=destination.pk).update(created_at=made)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    assert outbound_runs_due(now=made + timedelta(minutes=5)) == []
    assert outbound_runs_due(now=made + timedelta(hours=8)) == []  # 23:00, the same day
    assert outbound_runs_due(now=made + timedelta(hours=22, minutes=59)) == []  # 13:59 the next
    [run] = outbound_runs_due(now=made + timedelta(hours=23, minutes=1))  # 14:01 the next day
    assert run.status == "succeeded"
