from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from partners.models import DataSource, IDMapping, Partner, ReceiptRecipient
from tests.factories import (
    DataSourceFactory,
    IDMappingFactory,
    PartnerFactory,
    ProfileFactory,
    ReceiptRecipientFactory,
)

pytestmark = pytest.mark.django_db

GLOBAL_DEVICE_SOURCES = {
    20914: "hex_lower",
    20915: "hex_upper",
    121963: "hex_lower",
    488258: "hex_lower",
    1171485: "hex_lower",
    389146: "alphanumeric",
    963906: "alphanumeric",
    1171489: "alphanumeric",
}


def test_the_global_device_data_sources_exist_after_migrating() -> None:
    stored = dict(
        DataSource.objects.filter(partner__isnull=True).values_list("dpid", "device_id_format")
    )
    assert stored == GLOBAL_DEVICE_SOURCES
    assert set(
        DataSource.objects.filter(partner__isnull=True).values_list("inbound_id_type", flat=True)
    ) == {"device"}


def test_dpid_is_unique_in_the_database() -> None:
    DataSourceFactory.create(dpid=4242)
    with pytest.raises(IntegrityError), transaction.atomic():
        DataSource.objects.create(
            dpid=4242,
            partner=PartnerFactory.create(),
            name="again",
            id_type="cookie",
            inbound_id_type="dpuuid",
        )


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"dpid": 0}, "datasource_dpid_positive"),
        ({"partner": None}, "datasource_global_is_device"),
        ({"inbound_id_type": "device"}, "datasource_device_format_iff_device"),
        ({"device_id_format": "hex_lower"}, "datasource_device_format_iff_device"),
    ],
)
def test_data_source_check_constraints(fields: dict[str, object], constraint: str) -> None:
    values: dict[str, object] = {
        "dpid": 777,
        "partner": PartnerFactory.create(),
        "name": "x",
        "id_type": "cookie",
        "inbound_id_type": "dpuuid",
    } | fields
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        DataSource.objects.create(**values)


def test_partner_pid_must_be_positive() -> None:
    with pytest.raises(IntegrityError, match="partner_pid_positive"), transaction.atomic():
        Partner.objects.create(pid=0, slug="zero", name="Zero")


@pytest.mark.parametrize("dpuuid", ["a:b", "a%3Ab", "a%3ab", "a\tb", ""])
def test_dpuuid_format_is_enforced_by_the_database(dpuuid: str) -> None:
    source = DataSourceFactory.create()
    with pytest.raises(IntegrityError, match="idmapping_dpuuid_format"), transaction.atomic():
        IDMapping.objects.create(
            data_source=source,
            dpuuid=dpuuid,
            profile=ProfileFactory.create(),
            first_seen_at=timezone.now(),
            last_seen_at=timezone.now(),
        )


def test_dpuuid_validation_message_for_staff() -> None:
    mapping = IDMappingFactory.build(
        data_source=DataSourceFactory.create(), profile=ProfileFactory.create(), dpuuid="abc:1"
    )
    with pytest.raises(ValidationError) as caught:
        mapping.full_clean()
    assert caught.value.message_dict["dpuuid"] == [
        "A DPUUID must not contain ':' (nor its encoding '%3A')."
    ]


def test_one_mapping_per_data_source_dpuuid_and_profile() -> None:
    mapping = IDMappingFactory.create()
    with pytest.raises(IntegrityError, match="idmapping_unique"), transaction.atomic():
        IDMappingFactory.create(
            data_source=mapping.data_source, dpuuid=mapping.dpuuid, profile=mapping.profile
        )
    # The same DPUUID may map to a second profile (cross-device fan-out).
    IDMappingFactory.create(data_source=mapping.data_source, dpuuid=mapping.dpuuid)


def test_recipient_unique_even_without_a_data_source() -> None:
    recipient = ReceiptRecipientFactory.create()
    with pytest.raises(IntegrityError, match="receiptrecipient_unique"), transaction.atomic():
        ReceiptRecipient.objects.create(partner=recipient.partner, email=recipient.email)


def test_recipient_narrowed_to_another_partners_data_source_is_rejected() -> None:
    recipient = ReceiptRecipientFactory.build(
        partner=PartnerFactory.create(), data_source=DataSourceFactory.create()
    )
    with pytest.raises(ValidationError) as caught:
        recipient.full_clean()
    assert caught.value.message_dict["data_source"] == [
        "This data source belongs to another partner."
    ]


@pytest.mark.parametrize(
    ("hosts", "valid"),
    [
        (["partner.example", "*.partner.example", "localhost"], True),
        (["https://partner.example"], False),
        (["partner.example/path"], False),
        (["partner.example:8080"], False),
    ],
)
def test_redirect_hosts_are_host_names(hosts: list[str], valid: bool) -> None:
    source = DataSourceFactory.build(partner=PartnerFactory.create(), redirect_hosts=hosts)
    if valid:
        source.full_clean()
    else:
        with pytest.raises(ValidationError, match="is not a host name"):
            source.full_clean()


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("https://partner.example/sync?id=${DD_UUID}", None),
        ("https://partner.example/sync", "must contain ${DD_UUID}"),
        ("javascript:alert(1)//${DD_UUID}", "must start with https://"),
    ],
)
def test_idsync_url_template(template: str, error: str | None) -> None:
    source = DataSourceFactory.build(partner=PartnerFactory.create(), idsync_url_template=template)
    if error is None:
        source.full_clean()
    else:
        with pytest.raises(ValidationError, match=error.replace("$", r"\$")):
            source.full_clean()


def test_files_received_before_their_channel_was_recorded_get_what_is_known() -> None:
    """Migration 0022: a drop zone's file and a command's are told by their storage; an
    upload and an API delivery share the upload storage, so those stay unknown."""
    import importlib

    from django.apps import apps

    from partners.models import InboundFile

    migration = importlib.import_module("partners.migrations.0022_inbound_file_via")
    partner = PartnerFactory.create()
    for storage in ("channel:7", "", "default"):
        InboundFile.objects.create(
            partner=partner, name=f"f{storage}", storage=storage, path="p", size=1, sha256=""
        )
    migration.via_backfill(apps, None)
    assert dict(InboundFile.objects.values_list("storage", "via")) == {
        "channel:7": "dropzone",
        "": "command",
        "default": "",
    }
