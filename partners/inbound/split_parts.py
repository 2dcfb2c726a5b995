"""Reading the parts of split batches in a bounded form (:class:`PartsSummary`), made by
PostgreSQL from the (batch, split) index: the span and count of the parts, the first runs of
missing ones and how many are missing, never a list of every part. The portal's pages, the
answer to an upload and the release of waiting batches all read it here."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from django.db import connection

from partners.inbound.names import PART_GAPS_NAMED, PartsSummary

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
