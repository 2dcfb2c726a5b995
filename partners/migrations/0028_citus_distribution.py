"""On a Citus coordinator, the schema distributed (README "Scaling out"); on plain
PostgreSQL, nothing. The layout is written here, as the tables stood at this migration:

- profiles by their UUID (an ID sync or a file line finds its profile on one shard);
- what a profile holds (its traits, memberships and their change log) by the profile's id,
  co-located: a profile's rows join on one shard;
- ID mappings, opt-outs and pending cross-device records by the partner's ID (DPUUID),
  co-located: a file's lines find their mapping on one shard, a mapping its pending records;
- line errors by their batch: a receipt's errors are read from one shard;
- partners, data sources, traits and segments as reference tables, on every node;
- everything else stays on the coordinator (Citus local tables where they point at a
  reference table).
"""

from django.db import migrations

from portal.citus import Distributed, schema_distribute


def distribute(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_distribute(
        schema_editor,
        distributed=[
            Distributed("segments_profile", "uuid"),
            Distributed("segments_profiletraits", "profile_id"),
            Distributed("segments_segmentmembership", "profile_id", "segments_profiletraits"),
            Distributed(
                "segments_segmentmembershipchange", "profile_id", "segments_profiletraits"
            ),
            Distributed("partners_idmapping", "dpuuid"),
            Distributed("partners_idsyncoptout", "dpuuid", "partners_idmapping"),
            Distributed("partners_pendingrecord", "dpuuid", "partners_idmapping"),
            Distributed("partners_lineerror", "batch_id"),
        ],
        reference=[
            "partners_partner",
            "partners_datasource",
            "partners_datasource_shared_with",
            "segments_trait",
            "segments_segment",
        ],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0027_idsync_signed_cookies"),
        ("segments", "0004_help_text_placeholders"),
    ]

    operations = [migrations.RunPython(distribute, migrations.RunPython.noop, elidable=False)]
