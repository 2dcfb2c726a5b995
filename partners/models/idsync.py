"""ID mappings (a partner's user ID to our profile) and visitors' opt-outs."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from partners.models.sources import DataSource
from partners.validators import (
    validate_dpuuid,
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
