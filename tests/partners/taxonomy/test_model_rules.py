"""The rules the admin and the workbook share: stated once, by the models' clean(), and reported
by both (the admin next to the field, the workbook at the cell of its column)."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.exceptions import ValidationError

from partners.models import DataSource, Destination, DestinationSegment, InboundChannel
from partners.taxonomy import TaxonomyImportError, taxonomy_import
from portal.demo import demo_workbook, workbook_bytes
from segments.models import Trait
from tests.factories import DataSourceFactory, PartnerFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _errors(model: object) -> dict[str, list[tuple[str, str | None]]]:
    with pytest.raises(ValidationError) as caught:
        model.full_clean()  # type: ignore[attr-defined]
    return {
        name: [(problem.message, problem.code) for problem in problems]  # type: ignore[misc]
        for name, problems in caught.value.error_dict.items()
    }


@pytest.mark.parametrize(
    ("inbound", "device_format", "expected"),
    [
        ("device", "", ("needed for global device IDs", "needed")),
        ("dpuuid", "hex_lower", ("only for global device IDs", "only_device")),
    ],
)
def test_a_device_id_format_is_for_global_device_ids_only(
    inbound: str, device_format: str, expected: tuple[str, str]
) -> None:
    source = DataSourceFactory.build(
        partner=PartnerFactory.create(), inbound_id_type=inbound, device_id_format=device_format
    )
    assert _errors(source) == {"device_id_format": [expected]}


def test_a_rule_based_trait_needs_a_rule() -> None:
    trait = Trait(sid=5, data_source=DataSourceFactory.create(), name="x", kind="rule_based")
    assert _errors(trait) == {"rule": [("A rule-based trait needs a rule.", "needed")]}


def test_a_destination_segment_ends_on_or_after_its_start() -> None:
    partner = PartnerFactory.create()
    channel = InboundChannel.objects.create(
        partner=partner, name="c", kind="local", prefix="/srv/exchange"
    )
    destination = Destination.objects.create(partner=partner, name="d", channel=channel)
    mapped = DestinationSegment(
        destination=destination,
        segment=SegmentFactory.create(data_source=DataSourceFactory.create(partner=partner)),
        value="v",
        start_date=date(2026, 2, 1),
        end_date=date(2026, 1, 31),
    )
    assert _errors(mapped) == {"end_date": [("the end date is before the start date", "before")]}
    mapped.end_date = date(2026, 2, 1)
    mapped.full_clean()


def test_a_destination_with_no_such_channel_is_refused_not_a_crash() -> None:
    partner = PartnerFactory.create()
    destination = Destination(partner=partner, name="d", channel_id=999_999)
    assert "channel" in _errors(destination)  # the field's own "does not exist"


def test_the_workbook_now_refuses_a_pid_alias_the_admin_refuses() -> None:
    """Before, the workbook did not run Destination.clean(): it stored a PID alias that makes
    file names leave the destination's folder, which the admin refuses."""
    taxonomy_import(workbook=demo_workbook())
    channel = InboundChannel.objects.create(
        partner_id=1001, name="c", kind="local", prefix="/srv/exchange"
    )
    template = "<PID_ALIAS>_<SYNC_TYPE>_<ORDER_ID>_<TIMESTAMP>.sync"
    sheets = {
        "Destinations": [
            ["id", "partner_pid", "name", "channel_id", "pid_alias", "file_name_template"],
            [40, 1001, "Acme", channel.pk, "a/b", template],
        ]
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert [error.split(": ", 1)[0] for error in caught.value.errors] == ["Destinations!E2"]
    assert "used in the file names: a file name cannot hold '/'" in caught.value.errors[0]
    assert not Destination.objects.exists()


def test_the_workbook_refuses_a_destination_folder_with_a_backslash() -> None:
    """A path separator on a partner's Windows SFTP server: the admin and the workbook
    refuse it alike (the field's validator)."""
    taxonomy_import(workbook=demo_workbook())
    channel = InboundChannel.objects.create(
        partner_id=1001, name="c", kind="local", prefix="/srv/exchange"
    )
    sheets = {
        "Destinations": [
            ["id", "partner_pid", "name", "channel_id", "folder"],
            [40, 1001, "Acme", channel.pk, "out\\..\\..\\globex"],
        ]
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        "Destinations!E2: a plain folder path: no backslash, a path separator on Windows servers"
    ]
    assert not Destination.objects.exists()


def test_a_partner_row_without_a_slug_is_still_the_partner_other_sheets_name() -> None:
    """Before, a Partners row whose slug was missing also made its PID unknown to the
    DataSources sheet (a second, wrong report)."""
    sheets = {
        "Partners": [["pid", "slug", "name"], [7, "", "Seven"]],
        "DataSources": [
            ["dpid", "partner_pid", "name", "id_type", "inbound_id_type"],
            [70, 7, "Seven web", "cookie", "dpuuid"],
        ],
    }
    with pytest.raises(TaxonomyImportError) as caught:
        taxonomy_import(workbook=workbook_bytes(sheets))
    assert caught.value.errors == [
        "Partners!B2: 'slug' is required",
        "Partners!B2: This field cannot be blank.",
    ]
    assert not DataSource.objects.filter(dpid=70).exists()
