"""Inbound batches, their files, and the parts staged ahead of a batch."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from partners.models.partners import Partner
from partners.models.sources import DataSource


class InboundBatch(models.Model):
    """All the files of one logical delivery (every split part), processed together."""

    class Kind(models.TextChoices):
        TRAITS = "traits", "Trait data"
        DEVICE_TRAITS = "device_traits", "Trait data (legacy device file)"
        ID_SYNC = "id_sync", "ID synchronization"

    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting for other parts"
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"
        # Every file was processed before, by a batch that ran first: nothing applied twice.
        DUPLICATE = "duplicate", "Duplicate (already processed)"

    key = models.CharField(max_length=255, help_text="The file name before its part number.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="inbound_batches")
    data_source = models.ForeignKey(
        DataSource,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The data source of the user IDs (ID sync: the master DPID, empty for 0).",
        null=True,
        blank=True,
    )
    target = models.ForeignKey(
        DataSource,
        on_delete=models.PROTECT,
        related_name="inbound_batches",
        help_text="The data source whose traits are realized (ID sync: the mapped DPIDs' first).",
    )
    overwrite = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.WAITING)
    error = models.TextField(blank=True, help_text="Why the batch failed, in the partner's words.")
    missing_parts = models.CharField(
        max_length=500,
        blank=True,
        help_text="Part numbers still missing when the wait for them ran out (processed without).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "inbound batches"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["key"], name="inboundbatch_key")]
        constraints = [
            # Split parts arriving at the same time join one waiting batch, never two.
            models.UniqueConstraint(
                fields=["partner", "key"],
                condition=Q(status="waiting"),
                name="inboundbatch_one_waiting_per_key",
            )
        ]

    def __str__(self) -> str:
        return self.key


class InboundFile(models.Model):
    """One delivered file. A file with the same name and checksum as one already processed
    is a duplicate and is not applied again."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"
        DUPLICATE = "duplicate", "Duplicate"
        REJECTED = "rejected", "Rejected"

    class Via(models.TextChoices):
        """The channel a file came by (empty: received before this was recorded, by an
        upload or the API)."""

        UPLOAD = "upload", "Upload"
        API = "api", "API"
        DROPZONE = "dropzone", "Drop zone"
        COMMAND = "command", "Our team (command line)"

    batch = models.ForeignKey(
        InboundBatch, on_delete=models.CASCADE, related_name="files", null=True, blank=True
    )
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="inbound_files")
    name = models.CharField(max_length=255)
    split = models.PositiveIntegerField(null=True, blank=True)
    storage = models.CharField(
        max_length=100,
        blank=True,
        help_text="The storage holding the file (a STORAGES alias); empty: a path on the"
        " worker's disk.",
    )
    path = models.CharField(max_length=1024, help_text="Where the file is read from.")
    via = models.CharField(
        max_length=10, choices=Via.choices, blank=True, help_text="The channel it came by."
    )
    size = models.BigIntegerField()
    sha256 = models.CharField("SHA-256", max_length=64)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the file itself was deleted (its record stays)."
    )

    class Meta:
        ordering = ["name"]
        indexes = [
            # A split batch's parts in order: its summary, and a part sent twice, are read
            # from here without reading every part (partners/inbound/split_parts.py).
            models.Index(fields=["batch", "split"], name="inboundfile_batch_split"),
            # A partner's files newest first, paged (My files, the API's cursor).
            models.Index(
                fields=["partner", "-received_at", "-id"], name="inboundfile_partner_recent"
            ),
        ]
        constraints = [
            # A delivery is applied once: only one processed file per name and content.
            models.UniqueConstraint(
                fields=["name", "sha256"],
                condition=Q(status="processed"),
                name="inboundfile_processed_once",
            )
        ]

    def __str__(self) -> str:
        return self.name


class StagedPart(models.Model):
    """A part of a big batch parsed ahead by its own job (on any worker) into its own
    unlogged tables, waiting for the batch to be applied; gone when the batch commits."""

    file = models.OneToOneField(InboundFile, on_delete=models.CASCADE, related_name="staged")
    lines = models.BigIntegerField(help_text="Rows in its line table.")
    received = models.BigIntegerField()
    rejected = models.BigIntegerField()
    over_limit = models.BigIntegerField(
        default=0, help_text="Lines dropped while parsing as over the per-user limit."
    )
    staged_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.file} (staged)"
