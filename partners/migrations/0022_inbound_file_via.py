from django.db import migrations, models


def via_backfill(apps, schema_editor):
    """What the storage tells of files received before the channel was recorded: a drop
    zone's storage is its channel's, the ingest command reads a path on the disk. Uploads
    and API deliveries share the upload storage: those stay unknown (empty)."""
    InboundFile = apps.get_model("partners", "InboundFile")
    InboundFile.objects.filter(storage__startswith="channel:").update(via="dropzone")
    InboundFile.objects.filter(storage="").update(via="command")


class Migration(migrations.Migration):
    dependencies = [("partners", "0021_destination_created_at")]

    operations = [
        migrations.AddField(
            model_name="inboundfile",
            name="via",
            field=models.CharField(
                blank=True,
                choices=[
                    ("upload", "Upload"),
                    ("api", "API"),
                    ("dropzone", "Drop zone"),
                    ("command", "Our team (command line)"),
                ],
                help_text="The channel it came by.",
                max_length=10,
            ),
        ),
        migrations.RunPython(via_backfill, migrations.RunPython.noop),
    ]
