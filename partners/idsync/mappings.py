"""ID-mapping upkeep shared by every way mappings arrive (SPEC §2.1): caps, oldest first."""

from __future__ import annotations

from django.db import connection

# At most this many profiles (device IDs) per DPUUID, and DPUUIDs per profile and data
# source; past the cap the least recently seen mappings go.
MAX_PROFILES_PER_DPUUID = 100
MAX_DPUUIDS_PER_PROFILE = 10
_CAPS = (
    (("data_source_id", "dpuuid"), MAX_PROFILES_PER_DPUUID),
    (("profile_id", "data_source_id"), MAX_DPUUIDS_PER_PROFILE),
)


def id_mappings_enforce_caps(*, touched_table: str) -> int:
    """Evict the oldest mappings over the caps, looking only at the groups that the rows of
    ``touched_table`` (columns data_source_id, dpuuid, profile_id) belong to. Returns how
    many mappings were removed."""
    removed = 0
    with connection.cursor() as cursor:
        for (first, second), cap in _CAPS:
            cursor.execute(
                f"""
                DELETE FROM partners_idmapping m USING (
                    SELECT id FROM (
                        SELECT im.id, row_number() OVER (
                            PARTITION BY im.{first}, im.{second}
                            ORDER BY im.last_seen_at DESC, im.id DESC) AS n
                        FROM partners_idmapping im
                        JOIN (SELECT DISTINCT {first}, {second} FROM {touched_table}) t
                          ON t.{first} = im.{first} AND t.{second} = im.{second}
                    ) ranked WHERE n > %s
                ) over_cap WHERE m.id = over_cap.id
                """,
                [cap],
            )
            removed += cursor.rowcount
    return removed


def id_mappings_expire(*, days: int, chunk: int = 50_000) -> int:
    """Delete the mappings unseen for ``days`` days, in chunks (short transactions, so the
    ID-sync endpoint never waits long on a lock). Returns how many were deleted."""
    removed = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM partners_idmapping WHERE id IN (
                    SELECT id FROM partners_idmapping
                    WHERE last_seen_at < now() - make_interval(days => %s) LIMIT %s)
                """,
                [days, chunk],
            )
            removed += cursor.rowcount
            if cursor.rowcount < chunk:
                return removed
