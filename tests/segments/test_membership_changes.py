"""Segment membership kept current, with every join and leave logged with its time: after a
batch, after a segment's rule or status changes (a background job), and daily as
realizations age."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_rq
from django.test import Client
from django.utils import timezone
from rq import SimpleWorker

from segments.membership import segment_memberships_rebuild
from segments.models import ProfileTraits, Segment, SegmentMembership, SegmentMembershipChange
from tests.factories import SegmentFactory
from tests.partners.inbound.conftest import Deliver, World


def _log(segment: Segment) -> list[tuple[int, bool]]:
    return list(
        SegmentMembershipChange.objects.filter(segment=segment)
        .order_by("pk")
        .values_list("profile_id", "joined")
    )


def _members(segment: Segment) -> set[int]:
    return set(
        SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True)
    )


def test_a_batch_logs_who_joined_and_who_left(world: World, deliver: Deliver) -> None:
    tens = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=10\n"})
    assert sorted(_log(tens)) == [(world.u1.pk, True), (world.u2.pk, True)]
    deliver({"ftp_dpm_21_1700000001.sync": "u1\t10:0\nu2\td_sid=10\n"})  # u2 again: no change
    assert _log(tens)[2:] == [(world.u1.pk, False)]
    assert _members(tens) == {world.u2.pk}
    first, last = SegmentMembershipChange.objects.order_by("pk")[::2]
    assert first.at <= last.at <= timezone.now()


def test_paused_admits_nobody_and_deleted_drops_everyone_logged(
    world: World, deliver: Deliver
) -> None:
    tens = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    Segment.objects.filter(pk=tens.pk).update(status=Segment.Status.PAUSED)
    deliver({"ftp_dpm_21_1700000001.sync": "u2\td_sid=10\n"})
    assert _members(tens) == {world.u1.pk}  # keeps its member, admits no new one
    Segment.objects.filter(pk=tens.pk).update(status=Segment.Status.DELETED)
    segment_memberships_rebuild(segment_sids=[tens.sid])
    assert _members(tens) == set()
    assert _log(tens) == [(world.u1.pk, True), (world.u1.pk, False)]


def test_a_rule_changed_in_the_admin_rebuilds_in_the_background(
    world: World, deliver: Deliver, admin_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=11\n"})
    segment = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    assert _members(segment) == set()  # made after the batch: nobody yet
    queue = django_rq.get_queue("default")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/segments/segment/{segment.sid}/change/",
            {
                "data_source": world.source.pk,
                "name": segment.name,
                "rule": "11T",
                "status": "active",
            },
        )
    assert response.status_code == 302
    [job] = queue.get_jobs()
    assert job.args == (500,)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert _members(segment) == {world.u2.pk}
    assert _log(segment) == [(world.u2.pk, True)]


def test_the_daily_refresh_drops_members_whose_trait_outlived_its_ttl(
    world: World, deliver: Deliver
) -> None:
    tens = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    row = ProfileTraits.objects.get(profile=world.u1, data_source=world.source)
    long_ago = int((timezone.now() - timedelta(days=121)).timestamp())  # the TTL is 120 days
    row.realized = {"10": long_ago}
    row.save()
    assert segment_memberships_rebuild() == 1
    assert _members(tens) == set()
    assert _log(tens) == [(world.u1.pk, True), (world.u1.pk, False)]


def test_the_admin_shows_the_population_trend(
    world: World, deliver: Deliver, admin_client: Client
) -> None:
    tens = SegmentFactory.create(sid=500, data_source=world.source, rule="10T")
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu2\td_sid=10\n"})
    deliver({"ftp_dpm_21_1700000001.sync": "u1\t10:0\n"})
    yesterday = timezone.now() - timedelta(days=1)
    SegmentMembershipChange.objects.create(
        profile=world.u1, segment=tens, joined=True, at=yesterday
    )
    page = admin_client.get(f"/admin/segments/segment/{tens.sid}/change/").content.decode()
    table = page.split('id="segment-trend"')[1].split("</table>")[0]
    rows = [row.split("</td><td>") for row in table.split("<tr><td>")[1:]]
    today, before = rows[0], rows[1]
    assert today[1:3] == ["+2", "&minus;1"]
    assert today[3].startswith("1</td>")  # u2 is the one member now
    assert before[1:3] == ["+1", "&minus;0"]
    assert before[3].startswith("0</td>")  # before today's two joins and one leave


def test_a_taxonomy_import_rebuilds_the_segments_it_carries(
    world: World, deliver: Deliver, django_capture_on_commit_callbacks: Any
) -> None:
    import io

    from openpyxl import Workbook

    from partners.taxonomy import taxonomy_import

    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Segments"
    sheet.append(["sid", "dpid", "name", "rule", "status"])
    sheet.append([600, 21, "Tens", "10T", "active"])
    data = io.BytesIO()
    book.save(data)
    queue = django_rq.get_queue("default")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        taxonomy_import(workbook=io.BytesIO(data.getvalue()))
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert _members(Segment.objects.get(sid=600)) == {world.u1.pk}
