"""A data source's opt-outs (the partner API): the ID is never mapped again, to any visitor.

A visitor's own opt-out from their browser (``/optout``) concerns only their cookie's UUID and
is written by the endpoint (partners/idsync/endpoint.py); this one needs the partner's token,
since it forgets the ID for everyone who holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from partners.models import DataSource, IDSyncOptOut, Partner

MAX_OPT_OUTS_PER_CALL = 1000

# The opt-outs recorded (an ID already opted out by the data source is not recorded again:
# only new ones are counted) and the mappings deleted, in one statement.
_RECORD_SQL = """
WITH given AS (
    SELECT DISTINCT v.dpid, v.dpuuid
    FROM unnest(%(dpids)s::int[], %(dpuuids)s::text[]) v(dpid, dpuuid)
), recorded AS (
    INSERT INTO partners_idsyncoptout (data_source_id, dpuuid, profile_id, created_at)
    SELECT dpid, dpuuid, NULL, now() FROM given
    ON CONFLICT DO NOTHING RETURNING 1
), deleted AS (
    DELETE FROM partners_idmapping m USING given
    WHERE m.data_source_id = given.dpid AND m.dpuuid = given.dpuuid
    RETURNING 1
)
SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM deleted)
"""


@dataclass
class OptOutsRecorded:
    opted_out: int = 0  # new opt-outs: an ID sent twice, or opted out before, counts none
    mappings_deleted: int = 0
    # One entry per refused item: its position in the call and why, in a partner's words.
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _item_problem(item: Any, owned: set[int]) -> str | None:
    if not isinstance(item, dict):
        return 'each item is an object: {"dpid": <DPID>, "dpuuid": "<DPUUID>"}'
    dpid, dpuuid = item.get("dpid"), item.get("dpuuid")
    if type(dpid) is not int or not 0 < dpid <= 2**31 - 1:
        return "dpid is a DPID (a whole number)"
    if dpid not in owned:
        return f"data source {dpid} is not one of yours"
    if not isinstance(dpuuid, str):
        return "dpuuid is a string"
    optout = IDSyncOptOut(data_source_id=dpid, dpuuid=dpuuid)
    try:
        optout.clean_fields(exclude=["data_source", "profile"])
    except ValidationError as exc:
        return " ".join(message for messages in exc.message_dict.values() for message in messages)
    return None


@transaction.atomic
def optouts_record(*, partner: Partner, items: list[Any]) -> OptOutsRecorded:
    """Record the opt-outs of ``items`` (``{"dpid", "dpuuid"}`` each) for the partner's own
    data sources and delete every mapping of those IDs. A bad item is reported with its
    index; the others are recorded all the same."""
    owned = set(DataSource.objects.filter(partner=partner).values_list("dpid", flat=True))
    result = OptOutsRecorded()
    good: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        problem = _item_problem(item, owned)
        if problem:
            result.rejected.append({"index": index, "msg": problem})
        else:
            good.append((item["dpid"], item["dpuuid"]))
    if good:
        with connection.cursor() as cursor:
            cursor.execute(
                _RECORD_SQL,
                {"dpids": [dpid for dpid, _ in good], "dpuuids": [dpuuid for _, dpuuid in good]},
            )
            counts = cursor.fetchone()
        assert counts is not None
        result.opted_out, result.mappings_deleted = counts
    return result
