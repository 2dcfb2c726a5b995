# A marker, no schema change: the time this migration is applied (django_migrations.applied)
# is when this database's ID-sync cookies are signed. A bare (unsigned) cookie is taken only
# for a profile made before it, unless IDSYNC_PLAIN_COOKIES_BEFORE says otherwise
# (partners/idsync/endpoint.py, README "HTTP ID sync").

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0026_inbound_file_paging_indexes"),
    ]

    operations: list[migrations.operations.base.Operation] = []
