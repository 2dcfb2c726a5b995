"""The platform's global device data sources (SPEC §3.3): shared DPIDs for advertising IDs."""

from django.db import migrations

GLOBAL_DEVICE_SOURCES = [
    (20914, "Android GAID", "hex_lower"),
    (20915, "iOS IDFA", "hex_upper"),
    (121963, "Roku RIDA", "hex_lower"),
    (488258, "Amazon Fire TV", "hex_lower"),
    (1171485, "LG webOS", "hex_lower"),
    (389146, "Microsoft MAID", "alphanumeric"),
    (963906, "Samsung TIFA", "alphanumeric"),
    (1171489, "Vizio IFA", "alphanumeric"),
]


def create_global_sources(apps, schema_editor):
    DataSource = apps.get_model("partners", "DataSource")
    for dpid, name, device_id_format in GLOBAL_DEVICE_SOURCES:
        DataSource.objects.update_or_create(
            dpid=dpid,
            defaults={
                "partner": None,
                "name": name,
                "id_type": "device",
                "inbound_id_type": "device",
                "device_id_format": device_id_format,
                "active": True,
            },
        )


def remove_global_sources(apps, schema_editor):
    DataSource = apps.get_model("partners", "DataSource")
    DataSource.objects.filter(dpid__in=[dpid for dpid, _, _ in GLOBAL_DEVICE_SOURCES]).delete()


class Migration(migrations.Migration):
    dependencies = [("partners", "0002_initial")]

    operations = [migrations.RunPython(create_global_sources, remove_global_sources)]
