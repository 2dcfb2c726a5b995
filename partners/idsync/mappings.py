"""ID-mapping upkeep shared by every way mappings arrive (SPEC §2.1): caps, oldest first."""

from __future__ import annotations

from django.db import connection

# At most this many profiles (device IDs) per DPUUID, and DPUUIDs per profile and data
# source; past the cap the least recently seen mappings go.
MAX_PROFILES_PER_DPUUID = 100
MAX_DPUUIDS_PER_PROFILE = 10


def id_mappings_enforce_caps(*, touched_table: str) -> int:
    """Evict the oldest mappings over the caps, looking only at the (data source, DPUUID)
    and (profile, data source) pairs listed in ``touched_table`` (columns data_source_id,
    dpuuid, profile_id). Returns how many mappings were removed."""
    removed = 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM partners_idmapping m USING (
                SELECT id FROM (
                    SELECT im.id, row_number() OVER (
                        PARTITION BY im.data_source_id, im.dpuuid
                        ORDER BY im.last_seen_at DESC, im.id DESC) AS n
                    FROM partners_idmapping im
                    JOIN (SELECT DISTINCT data_source_id, dpuuid FROM {touched_table}) t
                      ON t.data_source_id = im.data_source_id AND t.dpuuid = im.dpuuid
                ) ranked WHERE n > %s
            ) over_cap WHERE m.id = over_cap.id
            """,
            [MAX_PROFILES_PER_DPUUID],
        )
        removed += cursor.rowcount
        cursor.execute(
            f"""
            DELETE FROM partners_idmapping m USING (
                SELECT id FROM (
                    SELECT im.id, row_number() OVER (
                        PARTITION BY im.profile_id, im.data_source_id
                        ORDER BY im.last_seen_at DESC, im.id DESC) AS n
                    FROM partners_idmapping im
                    JOIN (SELECT DISTINCT profile_id, data_source_id FROM {touched_table}) t
                      ON t.profile_id = im.profile_id AND t.data_source_id = im.data_source_id
                ) ranked WHERE n > %s
            ) over_cap WHERE m.id = over_cap.id
            """,
            [MAX_DPUUIDS_PER_PROFILE],
        )
        removed += cursor.rowcount
    return removed
