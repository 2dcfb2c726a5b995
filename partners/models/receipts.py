"""Receipts of batches, their line errors and pending records, their deliveries and recipients."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models

from partners.models.inbound import InboundBatch
from partners.models.partners import Partner
from partners.models.sources import DataSource


class Receipt(models.Model):
    """The processing summary of one batch (SPEC §4); ID-sync batches use the idsync_ fields."""

    batch = models.OneToOneField(InboundBatch, on_delete=models.CASCADE, related_name="receipt")
    records_received = models.BigIntegerField(default=0)
    format_errors = models.BigIntegerField(default=0)
    invalid_ids = models.BigIntegerField(default=0)
    no_matching_ids = models.BigIntegerField(default=0)
    no_trait_realized = models.BigIntegerField(default=0)
    records_processed = models.BigIntegerField(default=0)
    stored_records = models.BigIntegerField(default=0)
    total_devices = models.BigIntegerField(default=0)
    total_signals = models.BigIntegerField(default=0)
    total_unused_signals = models.BigIntegerField(default=0)
    total_realized_traits = models.BigIntegerField(default=0)
    total_removed_traits = models.BigIntegerField(default=0)
    total_traits_failed_validation = models.BigIntegerField(default=0)
    total_users_with_failed_traits = models.BigIntegerField(default=0)
    over_line_limit = models.BigIntegerField(
        default=0, help_text="Lines discarded past 200 lines for one user ID in a file."
    )
    pending_records = models.BigIntegerField(
        default=0, help_text="Cross-device records kept until their ID mapping arrives."
    )
    mappings_created = models.BigIntegerField(default=0)
    mappings_refreshed = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    job_start = models.DateTimeField()
    job_end = models.DateTimeField()
    errors_sample = models.JSONField(
        default=list, help_text="The first 10 errors of each kind: file, line, kind, reason, start."
    )

    def __str__(self) -> str:
        return f"Receipt for {self.batch}"


class LineError(models.Model):
    """One rejected line of a batch (kept up to a bound per batch, for the error workbook)."""

    batch = models.ForeignKey(InboundBatch, on_delete=models.CASCADE, related_name="line_errors")
    file_name = models.CharField(max_length=255)
    line_number = models.BigIntegerField()
    kind = models.CharField(max_length=40)
    reason = models.CharField(max_length=500)
    line_start = models.CharField(max_length=100)

    class Meta:
        indexes = [
            models.Index(
                fields=["batch", "kind", "file_name", "line_number"], name="lineerror_order"
            )
        ]

    def __str__(self) -> str:
        return f"{self.file_name}:{self.line_number} {self.kind}"


class PendingRecord(models.Model):
    """A cross-device record whose DPUUID had no mapping yet: applied when the mapping arrives."""

    data_source = models.ForeignKey(DataSource, on_delete=models.CASCADE, related_name="+")
    dpuuid = models.CharField(max_length=255)
    target = models.ForeignKey(DataSource, on_delete=models.CASCADE, related_name="+")
    adds = ArrayField(models.IntegerField())
    realized_at = models.DateTimeField()
    batch = models.ForeignKey(InboundBatch, on_delete=models.CASCADE, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["data_source", "dpuuid"], name="pending_lookup")]

    def __str__(self) -> str:
        return f"{self.data_source_id}:{self.dpuuid} pending"


class ReceiptDelivery(models.Model):
    """One sending of a receipt e-mail: made with the receipt, sent by an RQ job after the
    batch commits; a failed send stays here with its error, retried by RQ or re-sent."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    receipt = models.ForeignKey(Receipt, on_delete=models.CASCADE, related_name="deliveries")
    recipients = ArrayField(models.EmailField(), help_text="Every address of this sending.")
    # One message per address, each recorded here once its server took it: a retry (after a
    # failure, or a worker killed mid-send) sends only to the others.
    sent_to = ArrayField(
        models.EmailField(),
        default=list,
        blank=True,
        help_text="The addresses it was sent to so far (each its own message).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.CharField(
        max_length=150, blank=True, help_text="Who asked for a re-send (empty: automatic)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The receipt sweep (partners.receipts.sweep): a delivery still pending once RQ is done
    # with its job is queued again, a bounded number of times, then failed with the reason.
    requeued = models.PositiveSmallIntegerField(
        "queued again",
        default=0,
        help_text="Times the sweep queued it again because its job was lost or had stopped.",
    )
    requeued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "receipt deliveries"
        indexes = [
            # What the sweep reads: the few pending ones, not every delivery ever made.
            models.Index(
                fields=["created_at"],
                name="receipt_delivery_pending",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.receipt} to {', '.join(self.recipients)} ({self.status})"


class ReceiptRecipient(models.Model):
    partner = models.ForeignKey(
        Partner, on_delete=models.CASCADE, related_name="receipt_recipients"
    )
    email = models.EmailField()
    data_source = models.ForeignKey(
        DataSource,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="receipt_recipients",
        help_text="Only receipts of this data source. Empty: every receipt of the partner.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["partner", "email"]
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "email", "data_source"],
                nulls_distinct=False,
                name="receiptrecipient_unique",
                violation_error_message="This address already receives these receipts.",
            )
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        source = self.data_source
        if (
            source is not None
            and self.partner_id is not None
            and source.partner_id != self.partner_id
        ):
            raise ValidationError(
                {
                    "data_source": ValidationError(
                        "This data source belongs to another partner.", "other_partner"
                    )
                }
            )
