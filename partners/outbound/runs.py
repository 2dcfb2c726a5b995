"""Outbound runs (SPEC §6): render a destination's membership into files, in parts of at most
the maximum size, deliver them to its channel, then the ``.info`` control file.

Nothing reaches the channel until every part is rendered (into local temporary files), and
each file is delivered under a temporary name and then renamed (an S3 object appears whole),
so a run that fails midway leaves no half-written file under a final name and no ``.info``;
the retry is a new run. An ``iter`` run sends the changes since the last *successful* run, so
a failed run loses nothing. One run per destination at a time: a PostgreSQL session lock,
which dies with its worker's connection, so the next run knows a "running" run was killed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage
from django.db.models import Q
from django.utils import timezone

from partners.locks import OUTBOUND_RUN_LOCK, session_lock
from partners.models import Destination, OutboundRun
from partners.outages import connections_drop, database_unavailable
from partners.outbound.delivery import delivery_folder_checked, killed_run_leftovers, parts_deliver
from partners.outbound.parts import parts_render
from partners.receipts.alerts import outbound_failure_alert
from partners.storage import (
    STORAGE_ERRORS,
    StorageRefused,
    channel_storage,
    storage_delete,
    storage_opened,
)
from segments.services import membership_changes_horizon

logger = logging.getLogger(__name__)

# A run may export millions of members to a slow SFTP server.
OUTBOUND_JOB_TIMEOUT = 4 * 3600


class OutboundRunInProgress(Exception):
    """Another run of the destination is going on (in a live worker)."""


def outbound_run(
    *,
    destination: Destination,
    mode: str | None = None,
    window: tuple[datetime | None, datetime] | None = None,
) -> OutboundRun:
    """Export the destination now (``mode`` defaults to the destination's). ``window`` (a
    re-send) replays the changes of a past run instead of those since the last success.
    Raises :class:`OutboundRunInProgress` while another run of the destination goes on."""
    with session_lock(OUTBOUND_RUN_LOCK, destination.pk) as had:
        if not had:
            raise OutboundRunInProgress(f"destination {destination.pk} is being exported right now")
        _interrupted_runs_close(destination)
        return _run(destination, mode=mode or destination.mode, window=window)


def _interrupted_runs_close(destination: Destination) -> None:
    """A run still "running" while we hold the destination was killed with its worker (or
    lost the database before it could say it failed): say so in the history, and delete
    what it left under temporary names (its files were never renamed into place, or were
    complete; it wrote no .info)."""
    for killed in destination.runs.filter(status=OutboundRun.Status.RUNNING):
        killed.status = OutboundRun.Status.FAILED
        killed.error = (
            "interrupted: the run stopped before it ended (its worker stopped, or lost the"
            " database)"
        )
        killed.finished_at = timezone.now()
        killed.save(update_fields=["status", "error", "finished_at"])
        with storage_opened(channel_storage(destination.channel)) as storage:
            for name in killed_run_leftovers(destination, killed, storage):
                with contextlib.suppress(StorageRefused):  # the run says why (its folder)
                    storage_delete(storage, f"{destination.delivery_folder}/{name}")


def _run(
    destination: Destination, *, mode: str, window: tuple[datetime | None, datetime] | None
) -> OutboundRun:
    started = timezone.now()
    last_ok = destination.runs.filter(status=OutboundRun.Status.SUCCEEDED).first()
    since = None
    if mode == Destination.Mode.ITER and last_ok is not None:
        since = last_ok.started_at
    until = started
    if window is not None:
        since, until = window
    if mode == Destination.Mode.ITER and since and since < membership_changes_horizon(now=started):
        # The change log no longer reaches back to the last success: everybody, as they are.
        mode, since = Destination.Mode.FULL, None
    run = OutboundRun.objects.create(
        destination=destination, mode=mode, since=since, until=until, started_at=started
    )
    try:
        with tempfile.TemporaryDirectory(prefix="s2s-outbound-") as folder:
            _render_and_deliver(destination, run, Path(folder))
    except Exception as exc:
        reason = str(exc)
        if database_unavailable(exc):
            # The connection is gone: say so on the run over a new one (if the database is
            # there; else the job waits for it, and the next run closes this one).
            connections_drop()
            reason = f"the database connection was lost: {exc}".strip()
        OutboundRun.objects.filter(pk=run.pk).update(
            status=OutboundRun.Status.FAILED, error=reason, finished_at=timezone.now()
        )
        raise
    run.status = OutboundRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save()
    if destination.failures_in_a_row or destination.retry_after:  # the problem is over
        Destination.objects.filter(pk=destination.pk).update(failures_in_a_row=0, retry_after=None)
        destination.failures_in_a_row, destination.retry_after = 0, None
    return run


def _render_and_deliver(
    destination: Destination, run: OutboundRun, folder: Path, *, force_python: bool = False
) -> None:
    delivery_folder_checked(destination)  # before anything is rendered
    name_template, parts = parts_render(destination, run, folder, force_python=force_python)
    parts_deliver(destination, run, name_template, parts, folder)


def outbound_runs_due(*, now: datetime | None = None) -> list[OutboundRun]:
    """Run every active destination whose daily time has passed today and that has not run
    successfully since (the daily schedule calls this every few minutes). One that failed
    waits before its next try (:func:`_retry_later`), and alerts once a UTC day."""
    now = now or timezone.now()
    runs = []
    for destination in Destination.objects.filter(active=True).select_related("partner", "channel"):
        due = datetime.combine(now.date(), destination.daily_at, tzinfo=now.tzinfo)
        if now < due or due < destination.created_at:
            continue  # not yet today; or made after today's time: its first run is tomorrow's
        if destination.retry_after is not None and now < destination.retry_after:
            continue  # failed a moment ago: backing off
        if destination.runs.filter(
            status=OutboundRun.Status.SUCCEEDED, started_at__gte=due
        ).exists():
            continue
        try:
            runs.append(outbound_run(destination=destination))
        except OutboundRunInProgress:
            continue  # Run now, or a re-send, is exporting it at this moment
        except Exception:  # recorded on the run (failed, with its error); the others still go
            failed = destination.runs.first()
            retry_after = _retry_later(destination, now=now)
            if failed is not None:
                if _failure_alert_claim(destination, now=now):
                    outbound_failure_alert(run=failed, retry_after=retry_after)
                runs.append(failed)
    return runs


def _retry_later(destination: Destination, *, now: datetime) -> datetime:
    """Another failure in a row: the next try waits twice as long as the last, up to the cap.
    (Not RQ's Retry: the schedule itself comes back every few minutes and would run it
    anyway; this is what it honours.)"""
    failures = destination.failures_in_a_row + 1
    wait = min(
        settings.OUTBOUND_RETRY_SECONDS * 2 ** min(failures - 1, 30),
        settings.OUTBOUND_RETRY_MAX_SECONDS,
    )
    retry_after = now + timedelta(seconds=wait)
    Destination.objects.filter(pk=destination.pk).update(
        failures_in_a_row=failures, retry_after=retry_after
    )
    destination.failures_in_a_row, destination.retry_after = failures, retry_after
    return retry_after


def _failure_alert_claim(destination: Destination, *, now: datetime) -> bool:
    """Whether this failure alerts: the first of the destination's UTC day. One conditional
    UPDATE, so two schedulers polling at once still send one."""
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    claimed = (
        Destination.objects.filter(pk=destination.pk)
        .filter(Q(failure_alerted_at__isnull=True) | Q(failure_alerted_at__lt=day_start))
        .update(failure_alerted_at=now)
    )
    return claimed == 1


@dataclass
class OutboundPurgeResult:
    deleted: int = 0
    # (path, why): not deleted; its run is tried again at the next purge.
    failed: list[tuple[str, str]] = field(default_factory=list)


def outbound_purge(*, now: datetime | None = None) -> OutboundPurgeResult:
    """Delete the files of runs older than ``OUTBOUND_RETENTION_DAYS`` (8) from the channels;
    the runs and their figures stay. A file (or a channel) that fails is counted with its
    reason, and never stops the others; its run is tried again at the next purge."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.OUTBOUND_RETENTION_DAYS)
    result = OutboundPurgeResult()
    old = OutboundRun.objects.filter(started_at__lt=cutoff, purged_at__isnull=True).order_by("pk")
    for run in old.select_related("destination__partner", "destination__channel"):
        destination = run.destination
        target = destination.delivery_folder
        names = [*run.files.values_list("name", flat=True), run.info_name]
        failed = len(result.failed)
        try:
            with storage_opened(channel_storage(destination.channel)) as storage:
                for name in filter(None, names):
                    _outbound_file_delete(result, storage, f"{target}/{name}")
        except STORAGE_ERRORS as exc:  # the channel itself (unreachable, refused)
            result.failed.append((target, f"{type(exc).__name__}: {exc}"))
        if len(result.failed) > failed:
            for path, why in result.failed[failed:]:
                logger.warning("outbound purge: %r not deleted: %s", path, why)
            continue
        OutboundRun.objects.filter(pk=run.pk).update(purged_at=now)
    return result


def _outbound_file_delete(result: OutboundPurgeResult, storage: Storage, path: str) -> None:
    try:
        if storage_delete(storage, path):
            result.deleted += 1
    except (StorageRefused, IsADirectoryError, NotADirectoryError):
        pass  # a link on its way, a folder in its place: not ours to delete, left alone
    except STORAGE_ERRORS as exc:
        result.failed.append((path, f"{type(exc).__name__}: {exc}"))


def outbound_run_resend(*, run: OutboundRun) -> OutboundRun:
    """Send a past run again: the same mode and window of changes (``iter``: from its
    ``since`` to its start), rendered from the memberships as they are now for ``full``."""
    return outbound_run(
        destination=run.destination, mode=run.mode, window=(run.since, run.started_at)
    )
