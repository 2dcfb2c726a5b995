from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from partners.models import InboundBatch
from segments.models import ProfileTraits
from tests.factories import SegmentFactory
from tests.partners.inbound.conftest import World


def ingest(*args: str) -> str:
    out = io.StringIO()
    call_command("ingest", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_ingest_prints_one_json_object_per_batch(world: World, tmp_path: Path) -> None:
    (tmp_path / "ftp_dpm_21_1700000000.sync.1").write_text("u1\td_sid=10,d_sid=11\nu9\td_sid=10\n")
    (tmp_path / "ftp_dpm_21_1700000000.sync.2").write_text("u2\td_sid=90,zz=1\nu1 d_sid=10\n")
    (tmp_path / "ftp_dpm_22_1700000000.sync").write_text("nobody\td_sid=90\n")
    output = ingest(*(str(p) for p in sorted(tmp_path.iterdir())), "--json")
    lines = output.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["files"] == ["ftp_dpm_21_1700000000.sync.1", "ftp_dpm_21_1700000000.sync.2"]
    assert first.pop("missing_parts") == ""  # all parts given on the command line
    assert {
        k: v for k, v in first.items() if k not in ("files", "job_start", "job_end", "errors")
    } == {
        "records_received": 4,
        "format_errors": 1,
        "invalid_ids": 0,
        "no_matching_ids": 1,
        "no_trait_realized": 1,
        "records_processed": 4,
        "stored_records": 1,
        "total_devices": 1,
        "total_signals": 5,
        "total_unused_signals": 1,
        "total_realized_traits": 2,
        "total_removed_traits": 0,
        "total_traits_failed_validation": 1,
        "total_users_with_failed_traits": 1,
    }
    assert first["errors"][0] == {
        "file": "ftp_dpm_21_1700000000.sync.2",
        "line": 2,
        "kind": "format_error",
        "reason": "no tab between the user ID and the signals",
        "start": "u1 d_sid=10",
    }
    assert second["files"] == ["ftp_dpm_22_1700000000.sync"]
    assert second["no_matching_ids"] == 1


def test_ingest_prints_a_readable_receipt(world: World, tmp_path: Path) -> None:
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    text = ingest(str(path))
    assert "Server-to-Server processing result: Acme Data (DPID 21)" in text
    assert "Records received" in text
    assert "Total users with traits that failed validation" in text


def test_ingest_of_an_idsync_file(world: World, tmp_path: Path) -> None:
    path = tmp_path / "adobe_id_0_21_1700000000.sync"
    path.write_text("68079982765673198504052656074456196039\tnew-user\n")
    data = json.loads(ingest(str(path), "--json"))
    assert {
        k: data[k]
        for k in ("records_received", "mappings_created", "mappings_refreshed", "rejected")
    } == {
        "records_received": 1,
        "mappings_created": 1,
        "mappings_refreshed": 0,
        "rejected": 0,
    }
    assert data["files"] == ["adobe_id_0_21_1700000000.sync"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("ftp_dpm_21_17000000.sync", b"u1\td_sid=10\n", "'17000000' is not a 10-digit timestamp"),
        ("ftp_dpm_21_1700000000.sync", b"", "the file is empty"),
        ("ftp_dpm_21_1700000000.sync.gz", b"not gzip at all", "the file is corrupt"),
    ],
)
def test_ingest_of_an_unprocessable_file_fails_with_one_line(
    world: World, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CommandError) as caught:
        ingest(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not ProfileTraits.objects.exists()
    assert not InboundBatch.objects.filter(status=InboundBatch.Status.PROCESSED).exists()


def test_profile_show(world: World, tmp_path: Path) -> None:
    SegmentFactory.create(sid=500, data_source=world.source, rule="10T", name="Tens")
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    ingest(str(path))
    out = io.StringIO()
    call_command("profile_show", "21:u1", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["uuid"] == world.u1.uuid
    assert [m["dpuuid"] for m in summary["mappings"]] == ["u1"]
    assert [(t["sid"], t["dpid"]) for t in summary["traits"]] == [(10, 21)]
    assert summary["traits"][0]["expires"] is not None
    assert [s["sid"] for s in summary["segments"]] == [500]
    text = io.StringIO()
    call_command("profile_show", world.u1.uuid, stdout=text)
    assert "10T" in text.getvalue()
    with pytest.raises(CommandError, match="no profile is mapped to DPUUID 'nobody' of DPID 21"):
        call_command("profile_show", "21:nobody")
