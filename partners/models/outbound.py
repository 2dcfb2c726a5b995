"""Destinations of segment membership, their segments, runs and files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.html import escape

from partners.models.channels import InboundChannel
from partners.models.partners import Partner
from partners.models.sources import DataSource
from partners.outbound.templates import (
    DEFAULT_FILE_NAME,
    DEFAULT_ROW,
    TemplateError,
    compile_file_name_template,
    compile_row_template,
    file_name_template_refusal,
)

# Django renders help texts as HTML, unescaped (so that they may hold markup): a help text
# showing a <placeholder> is escaped where it is defined, or the placeholder vanishes from
# the page ("<prefix>/<slug>/" read "//").


def _template_check(compile_template: Callable[[str], object], value: str) -> None:
    try:
        compile_template(value)
    except TemplateError as exc:
        raise ValidationError(str(exc)) from exc


def _validate_file_name_template(value: str) -> None:
    _template_check(compile_file_name_template, value)
    refusal = file_name_template_refusal(compile_file_name_template(value))
    if refusal:
        raise ValidationError(refusal)


def _validate_row_template(value: str) -> None:
    _template_check(compile_row_template, value)


def outbound_folder_refusal(value: str) -> str | None:
    """Why ``value`` is not a destination's folder (a plain folder under the partner's
    folder); None when it is one. Checked when saved and again when a run starts."""
    # The partner's top folder and its date=… folders are where inbound files are polled.
    steps = value.strip("/").split("/")
    if steps == [""]:
        return "a folder under the partner's folder (inbound files arrive there)"
    if "\\" in value:  # a partner's Windows SFTP server takes it for "/"
        return "a plain folder path: no backslash, a path separator on Windows servers"
    if steps[0].startswith("date="):
        return "date=… folders are where the partner's inbound files arrive"
    if any(step in ("", ".", "..") for step in steps):
        return "a plain folder path: no empty, '.' or '..' steps"
    return None


def _validate_outbound_folder(value: str) -> None:
    refusal = outbound_folder_refusal(value)
    if refusal:
        raise ValidationError(refusal)


class Destination(models.Model):
    """Where and how a partner receives segment membership (SPEC §6): a folder of one of its
    channels, the file layout (templates), the mode and the mapped segments."""

    class SyncType(models.TextChoices):
        FTP = "ftp", "ftp"
        S3 = "s3", "s3"
        HTTP = "http", "http"

    class Mode(models.TextChoices):
        FULL = "full", "full: every current member"
        ITER = "iter", "iter: changes since the last successful run"

    class IDColumn(models.TextChoices):
        UUID = "uuid", "Platform UUID"
        DPUUID = "dpuuid", "The partner's DPUUID (of a data source)"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="destinations")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    channel = models.ForeignKey(
        InboundChannel,
        on_delete=models.PROTECT,
        related_name="destinations",
        help_text="The partner's storage the files are delivered to (S3, SFTP or local).",
    )
    folder = models.CharField(
        max_length=300,
        default="outbound",
        validators=[_validate_outbound_folder],
        help_text=escape(
            "Under <prefix>/<partner slug>/ in the channel; never polled for inbound files."
        ),
    )
    sync_type = models.CharField(max_length=5, choices=SyncType.choices, default=SyncType.S3)
    mode = models.CharField(max_length=5, choices=Mode.choices, default=Mode.FULL)
    id_column = models.CharField(max_length=10, choices=IDColumn.choices, default=IDColumn.UUID)
    id_data_source = models.ForeignKey(
        DataSource,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For DPUUIDs: the data source whose IDs are written.",
    )
    pid_alias = models.CharField("PID alias", max_length=100, blank=True)
    file_name_template = models.CharField(
        max_length=300, default=DEFAULT_FILE_NAME, validators=[_validate_file_name_template]
    )
    row_template = models.TextField(default=DEFAULT_ROW, validators=[_validate_row_template])
    header_template = models.TextField(
        blank=True,
        validators=[_validate_row_template],
        help_text="An optional first line of each file (row macros; its lists are empty).",
    )
    gzip = models.BooleanField(default=False)
    max_part_bytes = models.BigIntegerField(
        default=1024**3, validators=[MinValueValidator(1)], help_text="Per file, before gzip."
    )
    daily_at = models.TimeField(
        default="14:00",
        help_text="UTC. The first daily run is the first of these times after the destination"
        " is made (or Run now).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    segments: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        "segments.Segment", through="DestinationSegment", related_name="destinations"
    )
    # The daily schedule's failures: it waits longer after each (OUTBOUND_RETRY_*) and
    # alerts at most once per UTC day, instead of a run and an e-mail every poll.
    failures_in_a_row = models.PositiveIntegerField(default=0, editable=False)
    retry_after = models.DateTimeField(null=True, blank=True, editable=False)
    failure_alerted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["partner", "name"]
        constraints = [
            # Written around the model, a backslash would still split the folder on a
            # partner's Windows SFTP server (the run checks every rule again).
            models.CheckConstraint(
                condition=~models.Q(folder__contains="\\"),
                name="destination_folder_no_backslash",
                violation_error_message="a plain folder path: no backslash",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    @property
    def delivery_folder(self) -> str:
        """Where its files go in its channel (and what the channel's poller leaves alone)."""
        return f"{self.partner.slug}/{self.folder.strip('/')}"

    def clean(self) -> None:
        errors = {}
        try:
            channel = self.channel if self.channel_id else None
        except InboundChannel.DoesNotExist:
            channel = None  # no such channel: said where it is chosen
        if channel is not None and self.partner_id and channel.partner_id != self.partner_id:
            errors["channel"] = ValidationError("a channel of this partner", "other_partner")
        if self.id_column == self.IDColumn.DPUUID and not self.id_data_source_id:
            errors["id_data_source"] = ValidationError("needed to write DPUUIDs", "needed")
        elif (source := self.id_data_source) is not None and source.partner_id != self.partner_id:
            errors["id_data_source"] = ValidationError(
                "a data source of this partner", "other_partner"
            )
        if self.pid_alias:
            # The template alone is checked with a sample alias (its field); this alias goes
            # into the names too.
            try:
                template = compile_file_name_template(self.file_name_template)
            except TemplateError:
                template = None  # the field's own validator says why
            if (
                template is not None
                and "PID_ALIAS" in template.uses
                and file_name_template_refusal(template) is None
                and (refusal := file_name_template_refusal(template, pid_alias=self.pid_alias))
            ):
                errors["pid_alias"] = ValidationError(f"used in the file names: {refusal}")
        if errors:
            raise ValidationError(errors)


class DestinationSegment(models.Model):
    """A segment sent to a destination, under the partner's own value, between two dates."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="mapped")
    segment = models.ForeignKey("segments.Segment", on_delete=models.CASCADE, related_name="+")
    value = models.CharField(
        "destination value", max_length=200, help_text="What the partner calls it (alias)."
    )
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "segment"], name="destinationsegment_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} → {self.value}"

    def clean(self) -> None:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValidationError(
                {"end_date": ValidationError("the end date is before the start date", "before")}
            )


class OutboundRun(models.Model):
    """One export to a destination: its files and figures (the outbound history)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="runs")
    mode = models.CharField(max_length=5, choices=Destination.Mode.choices)
    since = models.DateTimeField(
        null=True, blank=True, help_text="iter: changes after this (the last successful run)."
    )
    until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="iter: changes up to this (the run's start, or a re-sent run's).",
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    records_received = models.BigIntegerField(default=0)
    records_successful = models.BigIntegerField(default=0)
    records_failed = models.BigIntegerField(default=0)
    lines = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    info_name = models.CharField("control file", max_length=300, blank=True)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When its files were deleted from the channel."
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.destination} at {self.started_at:%Y-%m-%d %H:%M}"


class OutboundFile(models.Model):
    run = models.ForeignKey(OutboundRun, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=300)
    sequence = models.PositiveIntegerField()
    lines = models.BigIntegerField()
    bytes = models.BigIntegerField()
    md5 = models.CharField(max_length=32)

    class Meta:
        ordering = ["run", "sequence"]

    def __str__(self) -> str:
        return self.name
