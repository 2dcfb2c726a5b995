"""Partners, the people of each partner, and its API token."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.html import escape

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
