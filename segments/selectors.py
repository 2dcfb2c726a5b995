"""Non-trivial reads about profiles, traits and segments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection
from django.db.models import Count, Expression, IntegerField, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate

from portal.db import aggregate_per, count_subquery
from segments.models import (
    Profile,
    ProfileTraits,
    Segment,
    SegmentMembership,
    SegmentMembershipChange,
    Trait,
)

# A realization is live while realized + TTL days is in the future; a TTL of 0 never expires.
LIVE_REALIZATION_SQL = (
    "({ttl} = 0 OR ({realized}->>{sid}::text)::bigint"
    " >= extract(epoch FROM now())::bigint - {ttl}::bigint * 86400)"
)


def trait_live_population_expression() -> Expression:
    """Per trait row: how many profiles hold it now (a subquery: only the rows shown pay)."""
    live = LIVE_REALIZATION_SQL.format(
        ttl="segments_trait.ttl_days", realized="pt.realized", sid="segments_trait.sid"
    )
    return RawSQL(
        "SELECT count(*) FROM segments_profiletraits pt"
        " WHERE pt.data_source_id = segments_trait.data_source_id"
        f" AND pt.realized ? segments_trait.sid::text AND {live}",
        (),
        output_field=IntegerField(),
    )


def trait_live_populations(sids: list[int]) -> dict[int, int]:
    """The same per trait ``sids``, in one grouped query (for Citus: portal.admin_values)."""
    live = LIVE_REALIZATION_SQL.format(ttl="t.ttl_days", realized="pt.realized", sid="t.sid")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.sid, count(*) FROM segments_profiletraits pt"
            " JOIN segments_trait t ON pt.data_source_id = t.data_source_id"
            f" AND pt.realized ? t.sid::text WHERE t.sid = ANY(%s) AND {live} GROUP BY t.sid",
            [sids],
        )
        return dict(cursor.fetchall())


def segment_population_expression() -> Expression:
    return count_subquery(SegmentMembership.objects.filter(segment=OuterRef("pk")), per="segment")


def segment_populations(sids: list[int]) -> dict[int, int]:
    return aggregate_per(SegmentMembership.objects.filter(segment__in=sids), per="segment")


@dataclass(frozen=True)
class LiveTrait:
    sid: int
    name: str
    dpid: int
    realized_at: datetime
    expires_at: datetime | None  # None: never


def profile_live_traits(profile: Profile, *, now: datetime | None = None) -> list[LiveTrait]:
    """The traits ``profile`` holds now, across data sources, ordered by SID."""
    now = now or datetime.now(UTC)
    realized: dict[int, int] = {}
    for held in ProfileTraits.objects.filter(profile=profile).values_list("realized", flat=True):
        realized.update({int(sid): int(at) for sid, at in held.items()})
    traits = Trait.objects.filter(sid__in=realized).values_list(
        "sid", "name", "data_source_id", "ttl_days"
    )
    live = []
    for sid, name, dpid, ttl_days in traits:
        realized_at = datetime.fromtimestamp(realized[sid], UTC)
        expires_at = realized_at + timedelta(days=ttl_days) if ttl_days else None
        if expires_at is None or expires_at > now:
            live.append(LiveTrait(sid, name, dpid, realized_at, expires_at))
    return sorted(live, key=lambda trait: trait.sid)


class ProfileNotFound(LookupError):
    pass


def profiles_lookup(reference: str) -> list[Profile]:
    """Profiles by a platform UUID, or by ``DPID:DPUUID`` (which may map to several)."""
    dpid, colon, dpuuid = reference.partition(":")
    if colon:
        if not dpid.isdigit() or not dpuuid:
            raise ProfileNotFound(f"'{reference}' is not DPID:DPUUID")
        profiles = list(
            Profile.objects.filter(
                id_mappings__data_source_id=int(dpid), id_mappings__dpuuid=dpuuid
            ).order_by("uuid")
        )
        if not profiles:
            raise ProfileNotFound(f"no profile is mapped to DPUUID '{dpuuid}' of DPID {dpid}")
        return profiles
    profile = Profile.objects.filter(uuid=reference).first()
    if profile is None:
        raise ProfileNotFound(f"no profile has UUID '{reference}'")
    return [profile]


def profile_summary(profile: Profile) -> dict[str, object]:
    """A profile's mappings, live traits and segments, as plain data."""
    return {
        "uuid": profile.uuid,
        "mappings": [
            {
                "dpid": dpid,
                "dpuuid": dpuuid,
                "first_seen": first.isoformat(),
                "last_seen": last.isoformat(),
            }
            for dpid, dpuuid, first, last in profile.id_mappings.order_by(
                "data_source_id", "dpuuid"
            ).values_list("data_source_id", "dpuuid", "first_seen_at", "last_seen_at")
        ],
        "traits": [
            {
                "sid": t.sid,
                "name": t.name,
                "dpid": t.dpid,
                "realized": t.realized_at.isoformat(),
                "expires": t.expires_at.isoformat() if t.expires_at else None,
            }
            for t in profile_live_traits(profile)
        ],
        "segments": [
            {"sid": sid, "name": name, "since": joined.isoformat()}
            for sid, name, joined in SegmentMembership.objects.filter(profile=profile)
            .order_by("segment_id")
            .values_list("segment_id", "segment__name", "joined_at")
        ],
    }


@dataclass(frozen=True)
class PopulationDay:
    day: date
    joined: int
    left: int
    population: int  # at the end of the day


def segment_population_trend(segment: Segment, *, days: int = 14) -> list[PopulationDay]:
    """The segment's joins, leaves and population per UTC day over the last ``days`` days,
    from its change log (one grouped query), newest first."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        SegmentMembershipChange.objects.filter(
            segment=segment, at__gte=datetime.combine(first, time.min, tzinfo=UTC)
        )
        .annotate(day=TruncDate("at", tzinfo=UTC))
        .values("day")
        .annotate(
            joins=Count("pk", filter=Q(joined=True)), leaves=Count("pk", filter=Q(joined=False))
        )
    )
    by_day = {row["day"]: (row["joins"], row["leaves"]) for row in rows}
    population = SegmentMembership.objects.filter(segment=segment).count()
    trend = []
    for offset in range(days):
        day = today - timedelta(days=offset)
        joined, left = by_day.get(day, (0, 0))
        trend.append(PopulationDay(day, joined, left, population))
        population -= joined - left  # the population the day before
    return trend
