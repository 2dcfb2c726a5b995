"""Segment membership upkeep, set-based (SPEC §5).

A segment rule is compiled into one SQL boolean expression over ``m``, a profile's merged
trait map (``{"<SID>": <realized UNIX seconds>}`` across its data sources), so membership of
any number of profiles is brought up to date with two statements per segment.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from segments.models import Segment, Trait
from segments.rules import And, Not, Or, Recency, SegmentRule, TraitRef, parse_segment_rule

DAY = 86_400


def segment_rule_sql(rule: SegmentRule, *, ttl_days: dict[int, int], now: int) -> str:
    """The rule as a SQL expression over the jsonb trait map ``m`` (pure; literals only)."""

    def realized(sid: int) -> str:
        return f"(m->>'{int(sid)}')::bigint"

    def live(sid: int) -> str:
        ttl = ttl_days.get(sid)
        if ttl is None:
            return "false"  # a trait that no longer exists is held by nobody
        if ttl == 0:
            return f"(m ? '{int(sid)}')"
        return f"(m ? '{int(sid)}' AND {realized(sid)} >= {now - ttl * DAY})"

    def compile_node(node: Any) -> str:
        if isinstance(node, And):
            return f"({compile_node(node.left)} AND {compile_node(node.right)})"
        if isinstance(node, Or):
            return f"({compile_node(node.left)} OR {compile_node(node.right)})"
        if isinstance(node, Not):
            return f"(NOT {compile_node(node.operand)})"
        if isinstance(node, TraitRef):
            return live(node.sid)
        assert isinstance(node, Recency)
        limit = now - node.days * DAY
        # "<= 30D": realized within the last 30 days, i.e. at or after now - 30 days.
        comparison = {"<=": ">=", "<": ">", ">=": "<=", ">": "<"}[node.op]
        terms = [f"({live(sid)} AND {realized(sid)} {comparison} {limit})" for sid in node.sids]
        return "(" + " OR ".join(terms) + ")"

    return compile_node(rule)


# Each join and leave is written to the change log in the same statement (a data-modifying
# CTE), so the log and the memberships can never disagree.
_JOIN = """
WITH joined AS (
    INSERT INTO segments_segmentmembership (profile_id, segment_id, joined_at)
    SELECT profile_id, %(sid)s, now() FROM touched_trait_map WHERE {expression}
    ON CONFLICT (segment_id, profile_id) DO NOTHING
    RETURNING profile_id
)
INSERT INTO segments_segmentmembershipchange (profile_id, segment_id, joined, at)
SELECT profile_id, %(sid)s, true, now() FROM joined
"""
_LEAVE = """
WITH left_ AS (
    DELETE FROM segments_segmentmembership s USING touched_trait_map t
    WHERE s.segment_id = %(sid)s AND s.profile_id = t.profile_id AND {condition}
    RETURNING s.profile_id
)
INSERT INTO segments_segmentmembershipchange (profile_id, segment_id, joined, at)
SELECT profile_id, %(sid)s, false, now() FROM left_
"""


def segment_memberships_refresh(
    *, profiles_table: str, now: int, segment_sids: list[int] | None = None
) -> int:
    """Bring membership of the profiles listed in ``profiles_table`` (a table with a
    ``profile_id`` column, e.g. a temporary table of the profiles a batch touched) up to date,
    in every segment (or those of ``segment_sids``), logging each join and leave; return
    how many there were.

    Active segments admit and drop members; paused ones keep theirs and admit nobody;
    deleted ones have none.
    """
    found = Segment.objects.all()
    if segment_sids is not None:
        found = found.filter(sid__in=segment_sids)
    segments = list(found.values_list("sid", "rule", "status"))
    changes = 0
    if not segments:
        return changes
    ttl_days = dict(Trait.objects.values_list("sid", "ttl_days"))
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS touched_trait_map")
        cursor.execute(
            f"""
            CREATE TEMP TABLE touched_trait_map ON COMMIT DROP AS
            SELECT t.profile_id, coalesce(jsonb_object_agg(e.key, e.value)
                                          FILTER (WHERE e.key IS NOT NULL), '{{}}') AS m
            FROM (SELECT DISTINCT profile_id FROM {profiles_table}) t
            LEFT JOIN segments_profiletraits pt ON pt.profile_id = t.profile_id
            LEFT JOIN LATERAL jsonb_each(pt.realized) e ON true
            GROUP BY t.profile_id
            """
        )
        for sid, rule, status in segments:
            if status == Segment.Status.DELETED:
                cursor.execute(_LEAVE.format(condition="true"), {"sid": sid})
                changes += cursor.rowcount
                continue
            if status == Segment.Status.PAUSED:
                continue  # keeps its members, admits no new ones
            expression = segment_rule_sql(parse_segment_rule(rule), ttl_days=ttl_days, now=now)
            cursor.execute(_JOIN.format(expression=expression), {"sid": sid})
            changes += cursor.rowcount
            cursor.execute(_LEAVE.format(condition=f"NOT {expression}"), {"sid": sid})
            changes += cursor.rowcount
    return changes


def segment_memberships_rebuild(
    *, segment_sids: list[int] | None = None, now: int | None = None
) -> int:
    """Membership of every profile that holds a trait or a membership, brought up to date in
    every segment (or those of ``segment_sids``), in one transaction: after a segment's rule
    or status changed, and daily, as realizations age past their trait's TTL or out of a
    recency window; return how many joins and leaves that made. (A *refresh* is the same
    for the profiles a batch touched: :func:`segment_memberships_refresh`.)"""
    with transaction.atomic(), connection.cursor() as cursor:
        if now is None:
            now = int(timezone.now().timestamp())
        cursor.execute("DROP TABLE IF EXISTS rebuild_profiles")
        cursor.execute(
            "CREATE TEMP TABLE rebuild_profiles ON COMMIT DROP AS"
            " SELECT profile_id FROM segments_profiletraits"
            " UNION SELECT profile_id FROM segments_segmentmembership"
        )
        return segment_memberships_refresh(
            profiles_table="rebuild_profiles", now=now, segment_sids=segment_sids
        )
