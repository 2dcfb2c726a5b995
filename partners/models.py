"""Who the platform exchanges data with: partners, their data sources and ID mappings."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from partners.validators import (
    validate_dpuuid,
    validate_idsync_url_template,
    validate_redirect_host,
)


class Partner(models.Model):
    pid = models.PositiveIntegerField("PID", primary_key=True, help_text="The partner ID.")
    slug = models.SlugField(
        unique=True, help_text="Short name used in drop-zone paths: <prefix>/<slug>/date=…"
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
            raise ValidationError({"data_source": "This data source belongs to another partner."})


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
