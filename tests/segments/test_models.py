from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction

from segments.models import Profile, ProfileTraits, Segment, Trait
from tests.factories import (
    DataSourceFactory,
    ProfileFactory,
    SegmentFactory,
    TraitFactory,
    realize,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("uuid", ["123", "1" * 37, "a" * 38, " " + "1" * 37])
def test_profile_uuid_is_38_digits_in_the_database(uuid: str) -> None:
    with pytest.raises(IntegrityError, match="profile_uuid_38_digits"), transaction.atomic():
        Profile.objects.create(uuid=uuid)


def test_profile_uuid_longer_than_38_is_refused_by_the_column() -> None:
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        Profile.objects.create(uuid="1" * 39)


def test_profile_uuid_is_unique() -> None:
    profile = ProfileFactory.create()
    with pytest.raises(IntegrityError), transaction.atomic():
        Profile.objects.create(uuid=profile.uuid)


def test_trait_sid_is_unique_and_positive() -> None:
    trait = TraitFactory.create(sid=10)
    with pytest.raises(IntegrityError), transaction.atomic():
        Trait.objects.create(sid=10, data_source=trait.data_source, name="again")
    with pytest.raises(IntegrityError, match="trait_sid_positive"), transaction.atomic():
        Trait.objects.create(sid=0, data_source=trait.data_source, name="zero")


def test_rule_based_trait_needs_a_rule_in_the_database() -> None:
    with pytest.raises(IntegrityError, match="trait_rule_based_has_rule"), transaction.atomic():
        Trait.objects.create(
            sid=5, data_source=DataSourceFactory.create(), name="x", kind="rule_based"
        )


def test_trait_rule_is_validated_on_save_with_its_position() -> None:
    trait = TraitFactory.build(
        data_source=DataSourceFactory.create(), rule='age > 30 ANDD x == "1"'
    )
    with pytest.raises(ValidationError) as caught:
        trait.full_clean()
    assert caught.value.message_dict["rule"] == ["unexpected token 'ANDD' at column 10"]


def test_segment_rule_is_validated_on_save() -> None:
    segment = SegmentFactory.build(data_source=DataSourceFactory.create(), rule="(1T OR 2T")
    with pytest.raises(ValidationError) as caught:
        segment.full_clean()
    assert caught.value.message_dict["rule"] == [
        "unexpected end of rule, expected ')' at column 10"
    ]


def test_segment_rule_with_unknown_traits_is_an_error() -> None:
    source = DataSourceFactory.create()
    TraitFactory.create(sid=1, data_source=source)
    segment = SegmentFactory.build(data_source=source, rule="1T AND (2T OR NOT 3T)")
    with pytest.raises(ValidationError) as caught:
        segment.full_clean()
    assert caught.value.message_dict["rule"] == ["unknown traits 2T, 3T"]
    segment.rule = "1T"
    segment.full_clean()


def test_segment_status_choices() -> None:
    segment = SegmentFactory.create()
    segment.status = "archived"
    with pytest.raises(ValidationError, match="not a valid choice"):
        segment.full_clean()
    assert {s.value for s in Segment.Status} == {"active", "paused", "deleted"}


def test_a_profile_holds_a_data_sources_traits_in_one_row() -> None:
    profile = ProfileFactory.create()
    first, second = TraitFactory.create(), TraitFactory.create()
    second.data_source = first.data_source
    second.save()
    realize(profile, first)
    realize(profile, second)
    held = ProfileTraits.objects.get(profile=profile, data_source=first.data_source)
    assert set(held.realized) == {str(first.sid), str(second.sid)}
