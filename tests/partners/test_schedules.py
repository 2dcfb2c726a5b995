"""Schedules: RQ's cron scheduler queues them, RQ workers run them, every run is recorded and
shown in the admin; each is also a management command for system cron."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.core.management import call_command
from django.test import Client
from django_rq.cron import DjangoCronScheduler
from rq import SimpleWorker

from partners.models import InboundChannel, InboundFile, ScheduleRun
from partners.schedules import schedule_run, schedules
from tests.conftest import queue_wipe
from tests.partners.inbound.conftest import World


@pytest.fixture
def queues() -> list[Any]:
    # Wiped, not only emptied: a channel's poll job ID is its database ID, which each test
    # database gives out again.
    return [queue_wipe(django_rq.get_queue(name)) for name in ("inbound", "default")]


def test_rq_cron_queues_every_schedule_and_a_worker_runs_it(
    world: World, queues: list[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "zone"
    (folder / "acme/date=2026-11-28").mkdir(parents=True)
    (folder / "acme/date=2026-11-28/ftp_dpm_21_1700000000.sync").write_text("u1\td_sid=10\n")
    channel = InboundChannel.objects.create(
        partner=world.partner, name="z", kind="local", prefix=str(folder)
    )

    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("portal.cron")
    jobs = {job.name: job for job in scheduler.get_jobs()}
    assert set(jobs) == {s.name for s in schedules()}
    assert jobs["inbound_poll"].interval == 300
    assert jobs["retention_purge"].cron == "30 3 * * *"

    enqueued = {job.name for job in scheduler.enqueue_jobs()}
    assert "inbound_poll" in enqueued  # an interval job is due at once
    inbound = queues[0]
    polled = []
    for _ in range(2):  # two polls: the file is seen, then registered
        # The schedule's job queues the channel's poll job, which the same burst runs.
        SimpleWorker([inbound], connection=inbound.connection).work(burst=True)
        channel.refresh_from_db()
        polled.append(channel.last_poll_result)
        poll = jobs["inbound_poll"]
        assert poll.next_enqueue_time is not None
        poll.next_enqueue_time -= timedelta(seconds=300)  # due again, instead of waiting
        assert [job.name for job in scheduler.enqueue_jobs()] == ["inbound_poll"]
    SimpleWorker([inbound], connection=inbound.connection).work(burst=True)
    runs = ScheduleRun.objects.filter(name="inbound_poll").order_by("started_at")
    assert [run.ok for run in runs] == [True, True, True]
    assert runs[1].result == "1 channel queued for a poll"
    assert polled == [
        "1 listed, 1 new, 0 registered, 0 rejected",
        "1 listed, 0 new, 1 registered, 0 rejected",
    ]
    assert InboundFile.objects.get().name == "ftp_dpm_21_1700000000.sync"


def test_commands_record_their_runs(world: World) -> None:
    out = io.StringIO()
    call_command("inbound_poll", stdout=out)
    call_command("retention_purge", stdout=out)
    call_command("idsync_expire", stdout=out)
    call_command("alerts_check", stdout=out)
    assert "no active drop zone" in out.getvalue()
    assert set(ScheduleRun.objects.filter(ok=True).values_list("name", flat=True)) == {
        "inbound_poll",
        "retention_purge",
        "idsync_expire",
        "alerts_check",
    }


def test_every_schedule_is_also_a_command_of_its_name() -> None:
    from django.core.management import get_commands

    assert {schedule.name for schedule in schedules()} <= set(get_commands())


def test_a_failed_run_is_recorded_with_its_error(db: Any) -> None:
    def broken() -> str:
        raise RuntimeError("the bucket is gone")

    with pytest.raises(RuntimeError):
        schedule_run(name="inbound_poll", run=broken)
    run = ScheduleRun.objects.get()
    assert (run.ok, run.result) == (False, "RuntimeError: the bucket is gone")
    assert run.finished_at is not None


def test_the_admin_shows_each_schedule_and_runs_one_now(
    admin_client: Client, queues: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    call_command("idsync_expire", stdout=io.StringIO())
    page = admin_client.get("/admin/tools/schedules/").content.decode()
    row = page.split('data-schedule="idsync_expire"')[1].split("</tr>")[0]
    assert "0 ID mappings unseen for 120 days deleted" in row
    assert "never" in page.split('data-schedule="retention_purge"')[1].split("</tr>")[0]

    with django_capture_on_commit_callbacks(execute=True):  # django-rq sends on commit
        response = admin_client.post("/admin/tools/schedules/", {"name": "retention_purge"})
    assert response.status_code == 302
    default = queues[1]
    [job] = default.get_jobs()
    assert (job.func_name, job.args) == ("partners.jobs.schedule_job", ("retention_purge",))
    SimpleWorker([default], connection=default.connection).work(burst=True)
    assert ScheduleRun.objects.get(name="retention_purge").ok is True


def test_the_old_command_names_still_run_their_schedules(world: World) -> None:
    """inbound_purge and segments_refresh were renamed (they purge more than inbound files;
    they rebuild): existing crontabs calling the old names go on working."""
    out = io.StringIO()
    call_command("inbound_purge", stdout=out)
    call_command("segments_refresh", stdout=out)
    assert set(ScheduleRun.objects.filter(ok=True).values_list("name", flat=True)) == {
        "retention_purge",
        "segments_rebuild",
    }
