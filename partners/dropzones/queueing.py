"""Queueing drop-zone polls for the RQ ``inbound`` workers: the layer above the drop zones'
services and jobs (it imports the job it enqueues, by function; the services never import
it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import django_rq
from django.conf import settings
from django.utils.translation import ngettext
from rq.job import Job

from partners.dropzones import jobs
from partners.inbound.queueing import inbound_waiting_batches_release
from partners.models import InboundChannel
from partners.rq_jobs import LIVE_JOB_STATUSES


def inbound_poll_job_id(channel_id: int) -> str:
    return f"inbound-poll-{channel_id}"


@dataclass
class PollsQueued:
    queued: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)  # their previous poll still queued or on

    def summary(self) -> str:
        if not self.queued and not self.busy:
            return "no active drop zone"
        count = len(self.queued)
        text = f"{count} {ngettext('channel', 'channels', count)} queued for a poll"
        if self.busy:
            ids = ", ".join(str(pk) for pk in self.busy[:20])
            more = f" and {len(self.busy) - 20} more" if len(self.busy) > 20 else ""
            text += f"; still polling from before: channel {ids}{more}"
        return text


def inbound_polls_queue(*, channel_ids: list[int] | None = None) -> PollsQueued:
    """Queue a poll of every active channel (or of those named: the admin's *Poll now*, the
    command's ``--channel``), one RQ job each on the ``inbound`` queue, then queue the split
    batches now complete.

    One job per channel, so a slow or hanging drop zone (a server that stalls, a huge
    listing) holds one worker, not every other partner's deliveries; RQ stops it after
    ``INBOUND_POLL_JOB_TIMEOUT``. Its job ID is the channel's, and a channel whose poll is
    still queued or running is not queued again (the channel's advisory lock keeps two
    polls of one channel apart in any case)."""
    channels = InboundChannel.objects.order_by("pk")
    if channel_ids is None:
        channels = channels.filter(active=True)
    else:
        channels = channels.filter(pk__in=channel_ids)
    ids = list(channels.values_list("pk", flat=True))
    result = PollsQueued()
    # Sent at once, not at the end of a transaction: the lock must cover the sending.
    queue = django_rq.get_queue("inbound", commit_mode="auto")
    with queue.connection.lock("s2s:inbound-polls-queue", timeout=120, blocking_timeout=60):
        found = Job.fetch_many([inbound_poll_job_id(pk) for pk in ids], connection=queue.connection)
        for pk, job in zip(ids, found, strict=True):
            if job is not None and job.get_status(refresh=False) in LIVE_JOB_STATUSES:
                result.busy.append(pk)
                continue
            if job is not None:  # its last poll, finished or failed: kept by RQ for a while
                job.delete()
            queue.enqueue(
                jobs.inbound_channel_poll_job,
                pk,
                job_id=inbound_poll_job_id(pk),
                job_timeout=settings.INBOUND_POLL_JOB_TIMEOUT,
                description=f"Poll the drop zone of channel {pk}",
            )
            result.queued.append(pk)
    inbound_waiting_batches_release()
    return result
