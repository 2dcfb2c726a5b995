from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from partners.idsync.mappings import MAX_DPUUIDS_PER_PROFILE
from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import IDMapping, IDSyncOptOut, LineError, PendingRecord, Receipt
from segments.models import Profile, ProfileTraits
from tests.factories import (
    DataSourceFactory,
    IDMappingFactory,
    PartnerFactory,
    ProfileFactory,
    TraitFactory,
)

pytestmark = pytest.mark.django_db

SAMPLE_UUIDS = [
    "68079982765673198504052656074456196039",
    "67412682083411995725538770443620307584",
    "89159024796760343733111707646026765593",
    "66552757407517449462805881945288602094",
    "66184778222667870903738139438735041506",
]


def process(*paths: Path) -> Receipt:
    registration = inbound_files_register(paths=list(paths))
    return inbound_batch_process(batch_id=registration.batches[0].pk)


def sample(fixtures_dir: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(fixtures_dir / name, tmp_path / name))


@pytest.fixture
def sources() -> None:
    partner = PartnerFactory.create()
    DataSourceFactory.create(dpid=12345, partner=partner)
    DataSourceFactory.create(dpid=67890, partner=partner)


def test_uuid_to_dpuuid_sample(sources: None, fixtures_dir: Path, tmp_path: Path) -> None:
    receipt = process(sample(fixtures_dir, tmp_path, "adobe_id_0_12345_1476312152.sync"))
    assert (receipt.records_received, receipt.mappings_created, receipt.rejected) == (5, 5, 0)
    mapping = IDMapping.objects.get(
        data_source_id=12345, dpuuid="XYZ3017D_2kzkTOXkFYIAgwbajoqWRcqkXl-TTrj6E4njaMR38"
    )
    assert mapping.profile.uuid == SAMPLE_UUIDS[0]
    assert Profile.objects.count() == 5


def test_chained_sync_and_refresh(sources: None, fixtures_dir: Path, tmp_path: Path) -> None:
    process(sample(fixtures_dir, tmp_path, "adobe_id_0_12345_1476312152.sync"))
    receipt = process(sample(fixtures_dir, tmp_path, "adobe_id_12345_67890_1477846458.sync"))
    assert (receipt.records_received, receipt.mappings_created, receipt.rejected) == (5, 5, 0)
    assert (
        IDMapping.objects.get(data_source_id=67890, dpuuid="4598060374").profile.uuid
        == (SAMPLE_UUIDS[0])
    )
    # The same file again, as a new delivery (new name): every mapping is refreshed.
    again = tmp_path / "adobe_id_12345_67890_1477846459.sync"
    again.write_bytes((fixtures_dir / "adobe_id_12345_67890_1477846458.sync").read_bytes())
    receipt = process(again)
    assert (receipt.mappings_created, receipt.mappings_refreshed) == (0, 5)


def test_chained_sync_of_unknown_ids_is_rejected(sources: None, tmp_path: Path) -> None:
    path = tmp_path / "adobe_id_12345_67890_1477846458.sync"
    path.write_text("nobody\t123\n")
    receipt = process(path)
    assert (receipt.mappings_created, receipt.rejected) == (0, 1)
    error = LineError.objects.get(batch=receipt.batch)
    assert error.kind == "no_matching_id"


def test_hashed_email_sample_with_crlf(fixtures_dir: Path, tmp_path: Path) -> None:
    partner = PartnerFactory.create()
    DataSourceFactory.create(dpid=999999, partner=partner, inbound_id_type="uuid")
    DataSourceFactory.create(dpid=987654, partner=partner)
    receipt = process(sample(fixtures_dir, tmp_path, "c2c_id_999999_987654_1560431657.sync"))
    assert (receipt.records_received, receipt.mappings_created, receipt.rejected) == (3, 3, 0)
    assert IDMapping.objects.filter(data_source_id=987654).count() == 3


def test_rejected_rows_say_why(sources: None, tmp_path: Path) -> None:
    path = tmp_path / "adobe_id_0_12345_1476312152.sync"
    path.write_text(
        f"{SAMPLE_UUIDS[0]}\tgood\n"
        f"{SAMPLE_UUIDS[1]}\tspace \n"  # ends in a space
        f"{SAMPLE_UUIDS[2]}\ta\tb\n"  # three columns for two DPIDs
        "123\tshort-uuid\n"  # not a UUID
        f"{SAMPLE_UUIDS[3]}\tco:lon\n"  # colon in a DPUUID
        f"{SAMPLE_UUIDS[4]}\t\n"  # ends in a tab
    )
    receipt = process(path)
    assert (receipt.records_received, receipt.mappings_created, receipt.rejected) == (6, 1, 5)
    reasons = [e["reason"] for e in receipt.errors_sample]
    assert "the line ends in a tab or a space" in reasons
    assert "3 columns, but the file name lists 2 DPIDs" in reasons
    assert "a UUID is exactly 38 digits" in reasons
    assert "column 2: a DPUUID must not contain ':'" in reasons


def test_pending_cross_device_records_apply_when_the_mapping_arrives(tmp_path: Path) -> None:
    partner = PartnerFactory.create()
    source = DataSourceFactory.create(dpid=21, partner=partner, id_type="cross_device")
    TraitFactory.create(sid=10, data_source=source)
    traits = tmp_path / "ftp_dpm_21_1700000000.sync"
    traits.write_text("late-user\td_sid=10\n")
    assert process(traits).pending_records == 1

    sync = tmp_path / "adobe_id_0_21_1700000100.sync"
    sync.write_text(f"{SAMPLE_UUIDS[0]}\tlate-user\n")
    process(sync)
    profile = Profile.objects.get(uuid=SAMPLE_UUIDS[0])
    held = ProfileTraits.objects.get(profile=profile, data_source=source).realized
    assert set(held) == {"10"}
    assert not PendingRecord.objects.exists()


def test_idsync_names_are_checked(sources: None, tmp_path: Path) -> None:
    path = tmp_path / "adobe_id_0_55555_1476312152.sync"
    path.write_text(f"{SAMPLE_UUIDS[0]}\tx\n")
    with pytest.raises(InboundRejected, match="DPID 55555 is not a data source we know"):
        inbound_files_register(paths=[path])


def test_mapping_caps_evict_the_least_recently_seen(sources: None, tmp_path: Path) -> None:
    profile = ProfileFactory.create(uuid=SAMPLE_UUIDS[0])
    long_ago = timezone.now() - timedelta(days=30)
    for i in range(MAX_DPUUIDS_PER_PROFILE):
        IDMappingFactory.create(
            data_source_id=12345,
            dpuuid=f"old-{i}",
            profile=profile,
            first_seen_at=long_ago + timedelta(minutes=i),
            last_seen_at=long_ago + timedelta(minutes=i),
        )
    path = tmp_path / "adobe_id_0_12345_1476312152.sync"
    path.write_text(f"{SAMPLE_UUIDS[0]}\tnewest\n")
    process(path)
    kept = set(IDMapping.objects.filter(profile=profile).values_list("dpuuid", flat=True))
    assert len(kept) == MAX_DPUUIDS_PER_PROFILE
    assert "newest" in kept
    assert "old-0" not in kept  # the least recently seen went


def test_control_characters_in_dpuuids_are_refused(sources: None, tmp_path: Path) -> None:
    """Before: a DPUUID holding \\x07 or \\x1b was mapped, and travelled into exports."""
    path = tmp_path / "adobe_id_0_12345_1476312152.sync"
    path.write_text(
        f"{SAMPLE_UUIDS[0]}\tgood\n{SAMPLE_UUIDS[1]}\tbe\x07ll\n{SAMPLE_UUIDS[2]}\tesc\x1b[2J\n"
        f"{SAMPLE_UUIDS[3]}\tnel\x85x\n"
    )
    receipt = process(path)
    assert (receipt.records_received, receipt.mappings_created, receipt.rejected) == (4, 1, 3)
    reasons = {e["reason"] for e in receipt.errors_sample}
    assert reasons == {
        "column 2: a DPUUID must not hold a control character (U+0007)",
        "column 2: a DPUUID must not hold a control character (U+001B)",
        "column 2: a DPUUID must not hold a control character (U+0085)",
    }
    assert list(IDMapping.objects.values_list("dpuuid", flat=True)) == ["good"]


def test_an_id_the_data_source_opted_out_is_not_mapped_by_a_file(
    sources: None, tmp_path: Path
) -> None:
    visitor = ProfileFactory.create(uuid=SAMPLE_UUIDS[1])
    IDSyncOptOut.objects.create(data_source_id=12345, dpuuid="gone")  # every visitor
    IDSyncOptOut.objects.create(data_source_id=12345, dpuuid="mine", profile=visitor)
    path = tmp_path / "adobe_id_0_12345_1476312152.sync"
    path.write_text(f"{SAMPLE_UUIDS[0]}\tgone\n{SAMPLE_UUIDS[0]}\tmine\n{SAMPLE_UUIDS[1]}\tmine\n")
    receipt = process(path)
    assert receipt.rejected == 0
    mapped = set(IDMapping.objects.values_list("dpuuid", "profile__uuid"))
    assert mapped == {("mine", SAMPLE_UUIDS[0])}  # only the visitor who opted out is spared
