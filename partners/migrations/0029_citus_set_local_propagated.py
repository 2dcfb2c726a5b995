"""On a Citus coordinator, the portal's session settings set again on the database (README
"Scaling out"): now also ``citus.propagate_set_commands = local``, so that a bounded lock
wait (SET LOCAL lock_timeout) holds on the workers, where the rows are. Nothing on plain
PostgreSQL."""

from django.db import migrations

from portal.citus import session_settings_apply


def apply(apps, schema_editor):  # type: ignore[no-untyped-def]
    session_settings_apply(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("partners", "0028_citus_distribution")]

    operations = [migrations.RunPython(apply, migrations.RunPython.noop, elidable=False)]
