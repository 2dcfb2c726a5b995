from __future__ import annotations

from datetime import datetime

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.utils import timezone

from partners.idsync.endpoint import new_uuid
from partners.models import (
    DataSource,
    IDMapping,
    InboundBatch,
    InboundChannel,
    Partner,
    PartnerUser,
    Receipt,
    ReceiptRecipient,
)
from segments.models import Profile, ProfileTraits, Segment, SegmentMembership, Trait


def random_uuid() -> str:
    """A platform UUID: 38 decimal digits (made as the ID-sync endpoint makes them)."""
    return new_uuid()


class PartnerFactory(factory.django.DjangoModelFactory[Partner]):
    class Meta:
        model = Partner
        django_get_or_create = ("pid",)

    pid = factory.Sequence(lambda n: 5000 + n)
    slug = factory.Sequence(lambda n: f"partner-{n}")
    name = factory.Sequence(lambda n: f"Partner {n}")
    contact_email = factory.LazyAttribute(lambda o: f"contact@{o.slug}.example")


class DataSourceFactory(factory.django.DjangoModelFactory[DataSource]):
    class Meta:
        model = DataSource
        django_get_or_create = ("dpid",)

    dpid = factory.Sequence(lambda n: 70000 + n)
    partner = factory.SubFactory(PartnerFactory)
    name = factory.Sequence(lambda n: f"Data source {n}")
    id_type = DataSource.IDType.COOKIE
    inbound_id_type = DataSource.InboundIDType.DPUUID


class ReceiptRecipientFactory(factory.django.DjangoModelFactory[ReceiptRecipient]):
    class Meta:
        model = ReceiptRecipient

    partner = factory.SubFactory(PartnerFactory)
    email = factory.Sequence(lambda n: f"recipient{n}@partner.example")


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")


class PartnerUserFactory(factory.django.DjangoModelFactory[PartnerUser]):
    class Meta:
        model = PartnerUser

    user = factory.SubFactory(UserFactory)
    partner = factory.SubFactory(PartnerFactory)


class ProfileFactory(factory.django.DjangoModelFactory[Profile]):
    class Meta:
        model = Profile

    uuid = factory.LazyFunction(random_uuid)


class IDMappingFactory(factory.django.DjangoModelFactory[IDMapping]):
    class Meta:
        model = IDMapping

    data_source = factory.SubFactory(DataSourceFactory)
    dpuuid = factory.Sequence(lambda n: f"dpuuid-{n}")
    profile = factory.SubFactory(ProfileFactory)
    first_seen_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)


class TraitFactory(factory.django.DjangoModelFactory[Trait]):
    class Meta:
        model = Trait
        django_get_or_create = ("sid",)

    sid = factory.Sequence(lambda n: 100 + n)
    data_source = factory.SubFactory(DataSourceFactory)
    name = factory.Sequence(lambda n: f"Trait {n}")
    kind = Trait.Kind.ONBOARDED


class SegmentFactory(factory.django.DjangoModelFactory[Segment]):
    class Meta:
        model = Segment
        django_get_or_create = ("sid",)

    sid = factory.Sequence(lambda n: 900 + n)
    data_source = factory.SubFactory(DataSourceFactory)
    name = factory.Sequence(lambda n: f"Segment {n}")
    rule = factory.LazyAttribute(lambda o: f"{TraitFactory.create(data_source=o.data_source).sid}T")


def realize(profile: Profile, trait: Trait, at: datetime | None = None) -> None:
    """Make ``profile`` hold ``trait``, realized at ``at`` (default: now)."""
    when = at or timezone.now()
    held, _ = ProfileTraits.objects.get_or_create(
        profile=profile,
        data_source_id=trait.data_source_id,
        defaults={"realized": {}, "updated_at": when},
    )
    held.realized[str(trait.sid)] = int(when.timestamp())
    ProfileTraits.objects.filter(profile=profile, data_source_id=trait.data_source_id).update(
        realized=held.realized, updated_at=when
    )


class SegmentMembershipFactory(factory.django.DjangoModelFactory[SegmentMembership]):
    class Meta:
        model = SegmentMembership

    profile = factory.SubFactory(ProfileFactory)
    segment = factory.SubFactory(SegmentFactory)
    joined_at = factory.LazyFunction(timezone.now)


class InboundBatchFactory(factory.django.DjangoModelFactory[InboundBatch]):
    class Meta:
        model = InboundBatch

    key = factory.Sequence(lambda n: f"ftp_dpm_21_{1700000000 + n}.sync")
    kind = InboundBatch.Kind.TRAITS
    partner = factory.SubFactory(PartnerFactory)
    target = factory.SubFactory(DataSourceFactory, partner=factory.SelfAttribute("..partner"))
    data_source = factory.SelfAttribute("target")
    status = InboundBatch.Status.PROCESSED


class ReceiptFactory(factory.django.DjangoModelFactory[Receipt]):
    """A receipt whose counters add up: received = stored + the error kinds given."""

    class Meta:
        model = Receipt

    batch = factory.SubFactory(InboundBatchFactory)
    records_received = factory.LazyAttribute(
        lambda r: (
            r.stored_records
            + r.format_errors
            + r.invalid_ids
            + r.no_matching_ids
            + r.no_trait_realized
        )
    )
    records_processed = factory.SelfAttribute("records_received")
    stored_records = 100
    format_errors = 0
    invalid_ids = 0
    no_matching_ids = 0
    no_trait_realized = 0
    job_start = factory.LazyFunction(timezone.now)
    job_end = factory.SelfAttribute("job_start")


class SftpChannelFactory(factory.django.DjangoModelFactory[InboundChannel]):
    """A partner's SFTP drop zone on loopback; give the port of the test's server."""

    class Meta:
        model = InboundChannel

    partner = factory.SubFactory(PartnerFactory)
    name = "Acme SFTP"
    kind = InboundChannel.Kind.SFTP
    host = "127.0.0.1"
    username = "acme"
    prefix = "/in"
    credentials_ref = "S2S_CREDENTIALS_ACME_SFTP"
