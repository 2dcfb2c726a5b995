"""The platform's recurring work, defined once.

RQ's own cron scheduler runs it (``python manage.py rqcron portal.cron``: one process, its
jobs visible in the django-rq dashboard), or system cron runs the management command of the
same name. Either way each run is recorded (:class:`ScheduleRun`), so the admin's
*Schedules* page shows every schedule's last run and result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import ngettext

from partners.dropzones import services as dropzones
from partners.dropzones.queueing import inbound_polls_queue
from partners.idsync.mappings import id_mappings_expire
from partners.inbound.sweep import inbound_batches_sweep
from partners.models import ScheduleRun
from partners.outbound.runs import OUTBOUND_JOB_TIMEOUT, outbound_purge, outbound_runs_due
from partners.receipts.alerts import silent_data_sources_alert
from partners.receipts.sweep import receipt_deliveries_sweep
from portal.auth import login_records_prune
from segments.membership import segment_memberships_rebuild
from segments.services import membership_changes_prune


def counted(count: int, singular: str, plural: str) -> str:
    """'1 file', '3 files': a run's result is read on the admin's Schedules page."""
    return f"{count} {ngettext(singular, plural, count)}"


@dataclass(frozen=True)
class Schedule:
    name: str  # the management command of the same name runs it by hand or from system cron
    title: str
    run: Callable[[], str]  # the service call; returns the run's one-line result
    interval: int | None = None  # seconds between runs, or
    cron: str | None = None  # a cron line (UTC)
    queue: str = "default"
    timeout: int = 3600


def inbound_poll_run(*, channel_id: int | None = None) -> str:
    """Queue a poll job per channel (each channel's result is on the channel)."""
    channel_ids = None if channel_id is None else [channel_id]
    return inbound_polls_queue(channel_ids=channel_ids).summary()


def inbound_sweep_run() -> str:
    return inbound_batches_sweep().summary()


def receipts_sweep_run() -> str:
    return receipt_deliveries_sweep().summary()


# The purge's summary names this many of the files it could not delete (the log has all).
PURGE_REASONS_SHOWN = 5


def _reasons(items: list[tuple[str, str]]) -> str:
    """The first few (path, why) in words; how many more."""
    text = "; ".join(f"{path!r}: {why}" for path, why in items[:PURGE_REASONS_SHOWN])
    if len(items) > PURGE_REASONS_SHOWN:
        text += f"; {len(items) - PURGE_REASONS_SHOWN} more in the log"
    return text


def _not_deleted(failed: list[tuple[str, str]]) -> str:
    if not failed:
        return ""
    return f", {len(failed)} not deleted (tried again at the next purge: {_reasons(failed)})"


def retention_purge_run() -> str:
    result = dropzones.inbound_purge()
    outbound = outbound_purge()
    # The record of past runs is kept as long as the files (a poll every 5 min is 288 a day).
    cutoff = timezone.now() - timedelta(days=settings.INBOUND_RETENTION_DAYS)
    pruned, _ = ScheduleRun.objects.filter(started_at__lt=cutoff).delete()
    changes = membership_changes_prune()
    logins = login_records_prune()
    gone = f"{result.missing} already gone"
    if result.refused:
        gone += f", {result.refused} behind a symbolic link left alone"
    if result.not_files:
        gone += (
            f", {len(result.not_files)} not files any more and left alone"
            f" ({_reasons(result.not_files)})"
        )
    return (
        f"{counted(result.deleted, 'file', 'files')} older than"
        f" {settings.INBOUND_RETENTION_DAYS} days deleted, {gone}{_not_deleted(result.failed)},"
        f" {counted(result.unclaimed, 'unclaimed upload', 'unclaimed uploads')} deleted;"
        f" {counted(outbound.deleted, 'outbound file', 'outbound files')} older than"
        f" {settings.OUTBOUND_RETENTION_DAYS} days deleted{_not_deleted(outbound.failed)};"
        f" {counted(pruned, 'old schedule run record', 'old schedule run records')} pruned;"
        f" {counted(changes, 'membership change', 'membership changes')} older than"
        f" {settings.SEGMENT_CHANGES_RETENTION_DAYS} days pruned;"
        f" {counted(logins, 'login record', 'login records')} older than"
        f" {max(settings.LOGIN_RECORDS_RETENTION_DAYS, settings.LOGIN_KNOWN_ADDRESS_DAYS)}"
        " days pruned"
    )


def idsync_expire_run(*, days: int | None = None) -> str:
    days = days or settings.IDSYNC_MAPPING_TTL_DAYS
    expired = id_mappings_expire(days=days)
    return f"{counted(expired, 'ID mapping', 'ID mappings')} unseen for {days} days deleted"


def alerts_check_run(*, days: int | None = None) -> str:
    days = days or settings.ALERT_SILENT_DAYS
    count = silent_data_sources_alert(days=days)
    silent = f"{counted(count, 'data source', 'data sources')} silent for {days} days"
    return silent + (": alert queued" if count else "")


def outbound_run_due_run() -> str:
    runs = outbound_runs_due()
    failed = [run for run in runs if run.status != "succeeded"]
    exported = f"{counted(len(runs), 'destination', 'destinations')} exported"
    return exported + (f", {len(failed)} failed" if failed else "")


def segments_rebuild_run() -> str:
    changes = segment_memberships_rebuild()
    return (
        f"{counted(changes, 'membership change', 'membership changes')} (joins and leaves)"
        " over all profiles"
    )


def schedules() -> list[Schedule]:
    return [
        Schedule(
            "inbound_poll",
            "Poll the drop zones, queue complete batches",
            inbound_poll_run,
            interval=settings.INBOUND_POLL_SECONDS,
            queue="inbound",
        ),
        Schedule(
            "inbound_sweep",
            "Queue again the batches whose job was lost, fail those RQ gave up on",
            inbound_sweep_run,
            interval=settings.INBOUND_SWEEP_SECONDS,
            # Not the inbound queue: its workers may all be busy (or dead: what it is for).
            queue="default",
            timeout=300,
        ),
        Schedule(
            "receipts_sweep",
            "Queue again the receipt e-mails whose job was lost, fail those that never go",
            receipts_sweep_run,
            interval=settings.NOTIFY_SWEEP_SECONDS,
            # Not the notify queue: the sweep is for when its workers are gone or stuck.
            queue="default",
            timeout=300,
        ),
        Schedule(
            "retention_purge",
            "Delete inbound and outbound files, schedule runs and membership changes past"
            " retention",
            retention_purge_run,
            cron="30 3 * * *",
        ),
        Schedule(
            "idsync_expire",
            "Expire ID mappings unseen for 120 days",
            idsync_expire_run,
            cron="15 3 * * *",
        ),
        Schedule(
            "outbound_run",
            "Export to the destinations whose daily time has come",
            outbound_run_due_run,
            interval=settings.INBOUND_POLL_SECONDS,
            queue="outbound",
            timeout=OUTBOUND_JOB_TIMEOUT,
        ),
        Schedule(
            "segments_rebuild",
            "Segment membership over all profiles, as realizations age (TTL, recency)",
            segments_rebuild_run,
            cron="0 2 * * *",
        ),
        Schedule(
            "alerts_check",
            "Alert about silent data sources",
            alerts_check_run,
            cron="0 7 * * *",
        ),
    ]


def schedule_get(name: str) -> Schedule:
    for schedule in schedules():
        if schedule.name == name:
            return schedule
    raise KeyError(name)


def schedule_run(*, name: str, run: Callable[[], str] | None = None) -> ScheduleRun:
    """Run a schedule (or ``run``, the same work with a command's own options) and record
    it. A failure is recorded with its error, then raised (RQ keeps the job as failed)."""
    record = ScheduleRun.objects.create(name=name, started_at=timezone.now())
    try:
        record.result = (run or schedule_get(name).run)()
    except Exception as exc:
        record.ok, record.result = False, f"{type(exc).__name__}: {exc}"
        raise
    else:
        record.ok = True
    finally:
        record.finished_at = timezone.now()
        record.save()
    return record


def schedule_last_runs() -> dict[str, ScheduleRun]:
    runs: QuerySet[ScheduleRun] = ScheduleRun.objects.order_by("name", "-started_at").distinct(
        "name"
    )
    return {run.name: run for run in runs}
