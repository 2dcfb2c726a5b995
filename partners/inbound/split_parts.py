"""Reading the parts of split batches in a bounded form (:class:`PartsSummary`), made by
PostgreSQL from the (batch, split) index: the span and count of the parts, the first runs of
missing ones and how many are missing, never a list of every part. The portal's pages, the
answer to an upload and the release of waiting batches all read it here; the release marks
the batches that are ready here too."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from partners.inbound.names import PART_GAPS_NAMED, PartsSummary
from partners.models import InboundBatch

# Per batch: the distinct part numbers, their count and span, and the runs between them
# that are missing (from the first part, 0 or 1: lag's default 0 makes part 1's gap start
# at 1 and gives part 0 none), the first PART_GAPS_NAMED of them in order.
_SUMMARY_SQL = """
WITH parts AS (
    SELECT DISTINCT batch_id, coalesce(split, 0) AS split
    FROM partners_inboundfile WHERE batch_id = ANY(%(batches)s)
), spans AS (
    SELECT batch_id, count(*) AS here, min(split) AS lowest, max(split) AS highest
    FROM parts GROUP BY batch_id
), gaps AS (
    SELECT batch_id, previous + 1 AS first, split - 1 AS last,
           row_number() OVER (PARTITION BY batch_id ORDER BY split) AS rank
    FROM (
        SELECT batch_id, split,
               lag(split, 1, 0) OVER (PARTITION BY batch_id ORDER BY split) AS previous
        FROM parts
    ) runs
    WHERE split - previous > 1
)
SELECT s.batch_id, s.here, s.lowest, s.highest,
       coalesce(array_agg(ARRAY[g.first, g.last] ORDER BY g.rank)
                FILTER (WHERE g.rank <= %(named)s), '{}')
FROM spans s LEFT JOIN gaps g ON g.batch_id = s.batch_id
GROUP BY s.batch_id, s.here, s.lowest, s.highest
"""


def split_parts_summaries(batch_ids: Collection[int]) -> dict[int, PartsSummary]:
    """The parts of each of ``batch_ids`` (those with no file are left out), in one query."""
    if not batch_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_SUMMARY_SQL, {"batches": list(batch_ids), "named": PART_GAPS_NAMED})
        rows = cursor.fetchall()
    summaries = {}
    for batch_id, here, lowest, highest, gaps in rows:
        first = 0 if lowest == 0 else 1
        summaries[batch_id] = PartsSummary(
            lowest=lowest,
            highest=highest,
            here=here,
            gaps=tuple((a, b) for a, b in gaps),
            missing=highest - first + 1 - here,
        )
    return summaries


def split_parts_last_received(batch_ids: Collection[int]) -> dict[int, datetime]:
    """When each of ``batch_ids`` last received a part."""
    if not batch_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT batch_id, max(received_at) FROM partners_inboundfile"
            " WHERE batch_id = ANY(%s) GROUP BY batch_id",
            [list(batch_ids)],
        )
        return dict(cursor.fetchall())


def split_batches_ready_mark(*, now: datetime | None = None) -> list[InboundBatch]:
    """Mark *queued* the waiting batches of split parts that are ready (SPEC §3.6), and
    return them; :func:`partners.inbound.queueing.inbound_waiting_batches_release` queues
    their jobs.

    A batch is ready once no part arrived for ``INBOUND_PARTS_SETTLE_SECONDS`` and its parts
    run from the first (0 or 1) to the highest without a gap; or, gaps or not, once it has
    waited ``INBOUND_PARTS_MAX_WAIT_SECONDS``: it is then processed with the parts it has,
    and its receipt names the missing ones (in bounded words: :class:`PartsSummary`). Safe
    to run from several places at once. Reads two aggregates per batch, never every part.
    """
    now = now or timezone.now()
    settle = timedelta(seconds=settings.INBOUND_PARTS_SETTLE_SECONDS)
    max_wait = timedelta(seconds=settings.INBOUND_PARTS_MAX_WAIT_SECONDS)
    released: list[InboundBatch] = []
    with transaction.atomic():
        waiting = InboundBatch.objects.filter(status=InboundBatch.Status.WAITING)
        batches = {b.pk: b for b in waiting.select_for_update(skip_locked=True)}
        summaries = split_parts_summaries(batches.keys())
        last_received = split_parts_last_received(summaries.keys())
        for batch_id, summary in summaries.items():
            batch = batches[batch_id]
            if now - last_received[batch_id] < settle or (
                summary.missing and now - batch.created_at < max_wait
            ):
                continue
            batch.status = InboundBatch.Status.QUEUED
            batch.missing_parts = summary.missing_text
            batch.save(update_fields=["status", "missing_parts"])
            released.append(batch)
    return released
