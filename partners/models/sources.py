"""Data sources: a partner's IDs and traits, and with whom they are shared."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from partners.models.partners import Partner
from partners.validators import (
    validate_idsync_url_template,
    validate_redirect_host,
)


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
