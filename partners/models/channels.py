"""Drop zones (inbound channels), the objects seen in them, and schedule runs."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.html import escape

from partners.models.inbound import InboundFile
from partners.models.partners import Partner

# Only names in this namespace are looked up: a channel whose reference could name any
# setting would send SECRET_KEY or DATABASES as a password to a host staff typed.
CREDENTIALS_PREFIX = "S2S_CREDENTIALS_"


# Django renders help texts as HTML, unescaped (so that they may hold markup): a help text
# showing a <placeholder> is escaped where it is defined, or the placeholder vanishes from
# the page ("<prefix>/<slug>/" read "//").


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
