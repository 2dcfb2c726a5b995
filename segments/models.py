"""What a profile is and holds: profiles, traits, segments, realizations, memberships."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.html import escape

from segments.rules import RuleError, parse_segment_rule, parse_trait_rule, segment_rule_sids

UUID_PATTERN = r"^[0-9]{38}$"


def validate_trait_rule(value: str) -> None:
    if not value:
        return
    try:
        parse_trait_rule(value)
    except RuleError as exc:
        raise ValidationError(str(exc), code="rule") from exc


def validate_segment_rule(value: str) -> None:
    try:
        parse_segment_rule(value)
    except RuleError as exc:
        raise ValidationError(str(exc), code="rule") from exc


class Profile(models.Model):
    """A platform visitor, known by its 38-digit UUID."""

    uuid = models.CharField(
        "UUID",
        max_length=38,
        unique=True,
        validators=[RegexValidator(UUID_PATTERN, "A UUID is exactly 38 decimal digits.")],
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(uuid__regex=UUID_PATTERN),
                name="profile_uuid_38_digits",
                violation_error_message="A UUID is exactly 38 decimal digits.",
            )
        ]

    def __str__(self) -> str:
        return self.uuid


# Help texts are rendered as HTML, unescaped: one holding <, > or " is escaped where it is
# defined (see partners.models).


class Trait(models.Model):
    class Kind(models.TextChoices):
        ONBOARDED = "onboarded", "Onboarded"
        RULE_BASED = "rule_based", "Rule-based"

    sid = models.PositiveIntegerField("SID", primary_key=True)
    data_source = models.ForeignKey(
        "partners.DataSource", on_delete=models.PROTECT, related_name="traits"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ONBOARDED)
    rule = models.TextField(
        blank=True,
        validators=[validate_trait_rule],
        help_text=escape(
            'For example: age > 30 AND gender == "male". May be empty for an onboarded '
            "trait (then only d_sid realizes it)."
        ),
    )
    integration_code = models.CharField(max_length=100, blank=True)
    ttl_days = models.PositiveIntegerField(
        "TTL (days)", default=120, help_text="Days a realization lives. 0 = never expires."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sid"]
        constraints = [
            models.CheckConstraint(condition=Q(sid__gt=0), name="trait_sid_positive"),
            models.CheckConstraint(
                condition=~Q(kind="rule_based") | ~Q(rule=""),
                name="trait_rule_based_has_rule",
                violation_error_message="A rule-based trait needs a rule.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sid}T)"

    def clean(self) -> None:
        # The trait_rule_based_has_rule constraint, said next to the field.
        if self.kind == self.Kind.RULE_BASED and not self.rule:
            raise ValidationError(
                {"rule": ValidationError("A rule-based trait needs a rule.", "needed")}
            )


class Segment(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        DELETED = "deleted", "Deleted"

    sid = models.PositiveIntegerField("SID", primary_key=True)
    data_source = models.ForeignKey(
        "partners.DataSource", on_delete=models.PROTECT, related_name="segments"
    )
    name = models.CharField(max_length=200)
    rule = models.TextField(
        validators=[validate_segment_rule],
        help_text=escape("For example: (1234T OR 5678T) AND NOT 9999T, or [1234T,5678T] <= 30D."),
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sid"]
        constraints = [models.CheckConstraint(condition=Q(sid__gt=0), name="segment_sid_positive")]

    def __str__(self) -> str:
        return f"{self.name} (segment {self.sid})"

    def clean(self) -> None:
        try:
            sids = segment_rule_sids(parse_segment_rule(self.rule))
        except RuleError:
            return  # the field validator reports it
        missing = sids - set(Trait.objects.filter(sid__in=sids).values_list("sid", flat=True))
        if missing:
            raise ValidationError(
                {"rule": ValidationError(unknown_traits_message(missing), "unknown_traits")}
            )


def unknown_traits_message(sids: set[int]) -> str:
    listed = ", ".join(f"{sid}T" for sid in sorted(sids))
    return f"unknown trait{'s' if len(sids) > 1 else ''} {listed}"


class ProfileTraits(models.Model):
    """Every trait a profile holds within one data source, with its last realization time.

    One row per (profile, data source) rather than one per (profile, trait): a batch then
    upserts one row per touched profile instead of one per realization, which is what keeps
    inbound processing fast (see README "Performance"). ``realized`` maps the SID (as text)
    to the UNIX time (seconds) of its last realization; a realization older than its trait's
    TTL has expired (selectors filter on that; a scheduled job purges them).
    """

    pk = models.CompositePrimaryKey("profile", "data_source")
    # A batch upserts one row here per touched profile, so every per-row cost counts: no
    # database foreign keys (a deferred check per row at commit; Django still cascades
    # deletes made through the ORM) and no index beyond the primary key, which already
    # serves lookups by profile.
    profile = models.ForeignKey(
        Profile,
        on_delete=models.CASCADE,
        related_name="trait_sets",
        db_constraint=False,
        db_index=False,
    )
    data_source = models.ForeignKey(
        "partners.DataSource",
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    realized = models.JSONField(default=dict)
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "profile traits"
        verbose_name_plural = "profile traits"

    def __str__(self) -> str:
        return f"{self.profile_id} in {self.data_source_id}: {len(self.realized)} traits"


class SegmentMembership(models.Model):
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="memberships")
    # The unique (segment, profile) index serves lookups by segment.
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    joined_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "profile"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.profile_id} in segment {self.segment_id}"


class SegmentMembershipChange(models.Model):
    """A profile joining or leaving a segment, with when: what an ``iter`` export sends (the
    changes since its last successful run) and what the admin's population trend counts."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes")
    joined = models.BooleanField(help_text="True: joined; False: left.")
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["segment", "at"], name="membershipchange_segment_at")]

    def __str__(self) -> str:
        return f"{self.profile_id} {'joined' if self.joined else 'left'} {self.segment_id}"
