"""Who the platform exchanges data with: partners, their data sources and ID mappings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.html import escape

from partners.outbound.templates import (
    DEFAULT_FILE_NAME,
    DEFAULT_ROW,
    TemplateError,
    compile_file_name_template,
    compile_row_template,
    file_name_template_refusal,
)
from partners.validators import (
    validate_dpuuid,
    validate_idsync_url_template,
    validate_redirect_host,
)

# Django renders help texts as HTML, unescaped (so that they may hold markup): a help text
# showing a <placeholder> is escaped where it is defined, or the placeholder vanishes from
# the page ("<prefix>/<slug>/" read "//").


class Partner(models.Model):
    pid = models.PositiveIntegerField("PID", primary_key=True, help_text="The partner ID.")
    slug = models.SlugField(
        unique=True,
        help_text=escape("Short name used in drop-zone paths: <prefix>/<slug>/date=…"),
    )
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    contact_email = models.EmailField(blank=True)
    receipts_enabled = models.BooleanField(
        "e-mail receipts to partner",
        default=False,
        help_text="Also send processing receipts to this partner's enabled receipt recipients "
        "(the internal partner-solutions list always gets them).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(pid__gt=0), name="partner_pid_positive")]

    def __str__(self) -> str:
        return f"{self.name} (PID {self.pid})"


class PartnerUser(models.Model):
    """Links a Django user to the one partner whose portal pages they may see."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="partner_link"
    )
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="users")

    class Meta:
        verbose_name = "partner user"

    def __str__(self) -> str:
        return f"{self.user} @ {self.partner.name}"


class DataSource(models.Model):
    """A namespace of user IDs and traits, identified by its DPID.

    Global device data sources (advertising IDs shared by every partner) have no owner.
    """

    class IDType(models.TextChoices):
        COOKIE = "cookie", "Cookie"
        DEVICE = "device", "Device"
        CROSS_DEVICE = "cross_device", "Cross-device"

    class InboundIDType(models.TextChoices):
        UUID = "uuid", "Platform UUID"
        DPUUID = "dpuuid", "Partner DPUUID"
        DEVICE = "device", "Global device ID"

    class DeviceIDFormat(models.TextChoices):
        NONE = "", "—"
        HEX_LOWER = "hex_lower", "Lowercase 8-4-4-4-12 hex"
        HEX_UPPER = "hex_upper", "Uppercase 8-4-4-4-12 hex"
        ALPHANUMERIC = "alphanumeric", "Alphanumeric"

    dpid = models.PositiveIntegerField("DPID", primary_key=True)
    partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        related_name="data_sources",
        null=True,
        blank=True,
        help_text="Owner. Empty only for the platform's global device data sources.",
    )
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    id_type = models.CharField("ID type", max_length=20, choices=IDType.choices)
    inbound_id_type = models.CharField(
        "inbound ID type",
        max_length=20,
        choices=InboundIDType.choices,
        help_text="How the user IDs of inbound files for this data source are read.",
    )
    device_id_format = models.CharField(
        "device ID format",
        max_length=20,
        choices=DeviceIDFormat.choices,
        blank=True,
        help_text="Required when the inbound ID type is a global device ID.",
    )
    integration_code = models.CharField(max_length=100, blank=True)
    redirect_hosts = ArrayField(
        models.CharField(max_length=253, validators=[validate_redirect_host]),
        blank=True,
        default=list,
        help_text="Hosts ID-sync calls may redirect to, comma-separated. "
        "'*.example.com' allows every subdomain of example.com.",
    )
    idsync_url_template = models.CharField(
        "partner ID-sync URL",
        max_length=2000,
        blank=True,
        validators=[validate_idsync_url_template],
        help_text="The partner's own ID-sync URL, with ${DD_UUID} where our UUID goes.",
    )
    shared_with = models.ManyToManyField(
        Partner,
        blank=True,
        related_name="shared_data_sources",
        help_text="Other partners allowed to send traits for this data source.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["dpid"]
        constraints = [
            models.CheckConstraint(condition=Q(dpid__gt=0), name="datasource_dpid_positive"),
            models.CheckConstraint(
                condition=Q(partner__isnull=False) | Q(inbound_id_type="device"),
                name="datasource_global_is_device",
                violation_error_message="Only a global device data source may have no partner.",
            ),
            models.CheckConstraint(
                condition=(Q(inbound_id_type="device") & ~Q(device_id_format=""))
                | (~Q(inbound_id_type="device") & Q(device_id_format="")),
                name="datasource_device_format_iff_device",
                violation_error_message="A device ID format is required for (and only for) "
                "the global device ID inbound type.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (DPID {self.dpid})"

    @property
    def is_global(self) -> bool:
        return self.partner_id is None

    def clean(self) -> None:
        # The datasource_device_format_iff_device constraint, said next to the field.
        device = self.inbound_id_type == self.InboundIDType.DEVICE
        if device and not self.device_id_format:
            raise ValidationError(
                {"device_id_format": ValidationError("needed for global device IDs", "needed")}
            )
        if self.inbound_id_type and not device and self.device_id_format:
            raise ValidationError(
                {"device_id_format": ValidationError("only for global device IDs", "only_device")}
            )


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


class IDMapping(models.Model):
    """(data source, DPUUID) ↔ platform profile, built by ID synchronization."""

    data_source = models.ForeignKey(
        DataSource, on_delete=models.PROTECT, related_name="id_mappings"
    )
    dpuuid = models.CharField("DPUUID", max_length=255, validators=[validate_dpuuid])
    profile = models.ForeignKey(
        "segments.Profile", on_delete=models.CASCADE, related_name="id_mappings"
    )
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        verbose_name = "ID mapping"
        constraints = [
            models.UniqueConstraint(
                fields=["data_source", "dpuuid", "profile"], name="idmapping_unique"
            ),
            models.CheckConstraint(
                condition=~Q(dpuuid="")
                & ~Q(dpuuid__contains=":")
                & ~Q(dpuuid__icontains="%3A")
                & ~Q(dpuuid__contains="\t"),
                name="idmapping_dpuuid_format",
                violation_error_message="A DPUUID must not be empty nor contain ':', '%3A' "
                "or a tab.",
            ),
        ]
        indexes = [models.Index(fields=["last_seen_at"], name="idmapping_last_seen")]

    def __str__(self) -> str:
        return f"{self.data_source_id}:{self.dpuuid}"


# --------------------------------------------------------------------------- the exchange


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


class IDSyncOptOut(models.Model):
    """An opt-out of a partner's ID sync: that DPUUID is never mapped again, to any visitor
    when the data source asked (``profile`` empty: the partner API), or to that visitor only
    when the visitor asked from their browser (``/optout``, their cookie's UUID)."""

    data_source = models.ForeignKey(DataSource, on_delete=models.CASCADE, related_name="opt_outs")
    dpuuid = models.CharField("DPUUID", max_length=255, validators=[validate_dpuuid])
    profile = models.ForeignKey(
        "segments.Profile",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="The visitor who opted out from their browser; empty: every visitor "
        "(the data source's opt-out).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "ID-sync opt-out"
        constraints = [
            models.UniqueConstraint(
                fields=["data_source", "dpuuid", "profile"],
                nulls_distinct=False,
                name="idsyncoptout_unique",
            )
        ]

    def __str__(self) -> str:
        whose = f" (visitor {self.profile_id})" if self.profile_id else ""
        return f"{self.data_source_id}:{self.dpuuid}{whose}"


class PartnerAPIToken(models.Model):
    """A partner's key to the JSON API. Only its SHA-256 is kept: the token is shown once,
    when made, and rotating it makes the old one useless at once."""

    partner = models.OneToOneField(Partner, on_delete=models.CASCADE, related_name="api_token")
    key_sha256 = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to tell it.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name = "partner API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.partner})"


# Only names in this namespace are looked up: a channel whose reference could name any
# setting would send SECRET_KEY or DATABASES as a password to a host staff typed.
CREDENTIALS_PREFIX = "S2S_CREDENTIALS_"
CREDENTIALS_REF = RegexValidator(
    rf"^{CREDENTIALS_PREFIX}[A-Z0-9_]+$",
    f"the name of an environment variable (or setting) starting with {CREDENTIALS_PREFIX},"
    " in capitals, digits and _ (for example S2S_CREDENTIALS_ACME_SFTP), never the secret",
)


class InboundChannel(models.Model):
    """A partner's drop zone, polled for new files: an S3 prefix, an SFTP folder or a local
    folder, holding ``<prefix>/<partner slug>/date=YYYY-MM-DD/<file name>`` (SPEC §3.1).
    Credentials stay out of the database: the channel names the setting or environment
    variable that holds them."""

    class Kind(models.TextChoices):
        S3 = "s3", "Object storage (S3)"
        SFTP = "sftp", "SFTP folder"
        LOCAL = "local", "Local folder"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    active = models.BooleanField(default=True)
    prefix = models.CharField(
        max_length=500,
        blank=True,
        help_text=escape(
            "S3: the key prefix; SFTP: the folder; local: the absolute folder path. Files"
            " are looked for under <prefix>/<partner slug>/date=YYYY-MM-DD/."
        ),
    )
    bucket = models.CharField("S3 bucket", max_length=100, blank=True)
    region = models.CharField("S3 region", max_length=50, blank=True)
    endpoint_url = models.URLField(
        "S3 endpoint URL", blank=True, help_text="Only for S3-compatible services other than AWS."
    )
    host = models.CharField("SFTP host", max_length=200, blank=True)
    port = models.PositiveIntegerField("SFTP port", default=22)
    username = models.CharField("SFTP user", max_length=100, blank=True)
    credentials_ref = models.CharField(
        "credentials (variable name)",
        max_length=100,
        blank=True,
        validators=[CREDENTIALS_REF],
        help_text=escape(
            "The name of the environment variable (or Django setting) holding the"
            " credentials, starting with S2S_CREDENTIALS_; never the secret itself."
            " S3: '<access key id>:<secret access key>' (empty: boto3's own chain, e.g. an"
            " instance role). SFTP: the password, or"
            " 'key:<path of a private key file>' (empty: the SSH agent and ~/.ssh keys)."
        ),
    )
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_poll_result = models.TextField(blank=True)

    class Meta:
        ordering = ["partner", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        required = {
            self.Kind.S3: ["bucket"],
            self.Kind.SFTP: ["host", "username"],
            self.Kind.LOCAL: ["prefix"],
        }.get(self.Kind(self.kind) if self.kind else self.Kind.LOCAL, [])
        errors = {
            name: f"needed for a {self.get_kind_display()} channel"
            for name in required
            if not getattr(self, name)
        }
        if self.kind == self.Kind.LOCAL and self.prefix and not self.prefix.startswith("/"):
            errors["prefix"] = "a local folder is an absolute path (it starts with /)"
        if errors:
            raise ValidationError(errors)


class ChannelObject(models.Model):
    """A file seen in a drop zone, by path and version (S3 ETag, or size and mtime). It is
    registered once its size held still between two polls, exactly once."""

    class State(models.TextChoices):
        SEEN = "seen", "Seen (waiting for its size to hold)"
        REGISTERED = "registered", "Registered"
        REJECTED = "rejected", "Rejected"
        PURGED = "purged", "Purged from the drop zone"

    channel = models.ForeignKey(InboundChannel, on_delete=models.CASCADE, related_name="listed")
    path = models.CharField(max_length=1024, help_text="Its name under the channel's prefix.")
    version = models.CharField(max_length=200)
    size = models.BigIntegerField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.SEEN)
    file = models.ForeignKey(
        InboundFile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "path", "version"], name="channelobject_once"
            )
        ]
        indexes = [models.Index(fields=["channel", "state"], name="channelobject_state")]

    def __str__(self) -> str:
        return self.path


class ScheduleRun(models.Model):
    """One run of a scheduled task (RQ cron or system cron), with its result."""

    name = models.CharField(max_length=50, db_index=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True)
    result = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.name} at {self.started_at:%Y-%m-%d %H:%M}"


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
