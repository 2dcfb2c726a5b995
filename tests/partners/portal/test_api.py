"""The partners' JSON API: token authentication and rotation, scoped reads, upload, dry run."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from partners.idsync.endpoint import sources
from partners.models import IDMapping, IDSyncOptOut, InboundFile, Receipt
from partners.portal.api import api_token_rotate
from tests.factories import DataSourceFactory, IDMappingFactory, PartnerFactory
from tests.partners.idsync.test_endpoint import get
from tests.partners.inbound.conftest import Deliver, World
from tests.partners.portal.test_pages import _login


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token(world: World, settings: Any, tmp_path: Any) -> str:
    settings.MEDIA_ROOT = tmp_path / "media"
    return api_token_rotate(partner=world.partner, by="test")


def test_no_token_or_a_wrong_one_is_401(client: Client, token: str) -> None:
    assert client.get("/api/v1/files").status_code == 401
    answer = client.get("/api/v1/files", headers=_bearer("s2s_wrong"))
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["msg"].startswith("give a valid API token")


def test_a_rotated_token_stops_working(client: Client, world: World, token: str) -> None:
    assert client.get("/api/v1/files", headers=_bearer(token)).status_code == 200
    partner_page = _login(world.partner, "acme")
    page = partner_page.post("/portal/api-token/").content.decode()
    new = page.split('id="api-token">')[1].split("<")[0]
    assert new.startswith("s2s_")
    assert new != token
    assert client.get("/api/v1/files", headers=_bearer(token)).status_code == 401
    assert client.get("/api/v1/files", headers=_bearer(new)).status_code == 200


def test_files_and_receipts_of_the_token_partner_only(
    client: Client, world: World, deliver: Deliver, token: str
) -> None:
    receipt: Receipt = deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu9\td_sid=10\n"})
    files = client.get("/api/v1/files", headers=_bearer(token)).json()["files"]
    assert [(f["name"], f["status"], f["receipt"]) for f in files] == [
        ("ftp_dpm_21_1700000000.sync", "processed", receipt.pk)
    ]
    body = client.get(f"/api/v1/receipts/{receipt.pk}", headers=_bearer(token)).json()
    assert (body["records_received"], body["stored_records"], body["no_matching_ids"]) == (2, 1, 1)
    other = api_token_rotate(partner=PartnerFactory.create(), by="test")
    assert client.get(f"/api/v1/receipts/{receipt.pk}", headers=_bearer(other)).status_code == 404
    assert client.get("/api/v1/files", headers=_bearer(other)).json() == {"files": [], "next": None}


def test_upload_and_dry_run(client: Client, token: str) -> None:
    bad = client.post(
        "/api/v1/files", {"file": SimpleUploadedFile("data.csv", b"x")}, headers=_bearer(token)
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "file"
    check = client.post(
        "/api/v1/dry-run",
        {"file": SimpleUploadedFile("ftp_dpm_21_1700000000.sync", b"u1\td_sid=10\nu9 x\n")},
        headers=_bearer(token),
    )
    assert check.status_code == 200
    report = check.json()
    assert (report["lines"], report["format_errors"], report["user_ids_matched"]) == (2, 1, 1)
    assert (report["records_received"], report["stored_records"]) == (2, 1)
    assert report["realized"] == {"10": 1}
    assert not InboundFile.objects.exists()
    made = client.post(
        "/api/v1/files",
        {"file": SimpleUploadedFile("ftp_dpm_21_1700000000.sync", b"u1\td_sid=10\n")},
        headers=_bearer(token),
    )
    assert made.status_code == 201
    assert made.json()["files"][0]["status"] == "queued"
    assert made.json()["files"][0]["via"] == "api"  # My files says how it came


def test_a_dry_run_token_processes_the_checked_file(client: Client, token: str) -> None:
    check = client.post(
        "/api/v1/dry-run",
        {"file": SimpleUploadedFile("ftp_dpm_21_1700000000.sync", b"u1\td_sid=10\n")},
        headers=_bearer(token),
    )
    process = check.json()["process"]
    made = client.post("/api/v1/files", process, headers=_bearer(token))
    assert made.status_code == 201
    [row] = made.json()["files"]
    assert (row["name"], row["status"], row["via"]) == (
        "ftp_dpm_21_1700000000.sync",
        "queued",
        "api",
    )
    gone = client.post(
        "/api/v1/files", {**process, "token": "0" * 16}, headers=_bearer(token)
    ).json()
    assert gone["errors"] == [
        {"msg": "this checked file is no longer available: upload it again", "field": "token"}
    ]


def test_a_split_part_waits_for_the_others(client: Client, token: str) -> None:
    made = client.post(
        "/api/v1/files",
        {"file": SimpleUploadedFile("ftp_dpm_21_1700000000.sync.1", b"u1\td_sid=10\n")},
        headers=_bearer(token),
    )
    assert made.status_code == 201
    [row] = made.json()["files"]
    assert (row["status"], row["status_detail"]) == ("waiting", "part 1 here")


def test_a_data_source_opts_out_its_own_ids_for_every_visitor(
    client: Client, world: World, token: str
) -> None:
    """The opt-out a browser cannot make for others: the partner's token proves the data
    source is its own; bad items are listed and the good ones recorded all the same."""
    other_partner = PartnerFactory.create()
    DataSourceFactory.create(dpid=77, partner=other_partner)
    IDMappingFactory.create(data_source=world.source, dpuuid="u1")  # a second visitor's u1
    IDMappingFactory.create(data_source_id=77, dpuuid="u1")
    ids = [
        {"dpid": 21, "dpuuid": "u1"},
        {"dpid": 21, "dpuuid": "u1"},  # the same twice: once
        {"dpid": 77, "dpuuid": "u1"},  # another partner's data source
        {"dpid": 2**31, "dpuuid": "u1"},
        {"dpid": 21, "dpuuid": "a\x00b"},
        {"dpid": 21, "dpuuid": "a:b"},
        {"dpid": 21, "dpuuid": "x" * 256},
        "u2",
    ]
    answer = client.post(
        "/api/v1/optouts", {"ids": ids}, content_type="application/json", headers=_bearer(token)
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["opted_out"], body["mappings_deleted"]) == (1, 2)
    assert [item["index"] for item in body["rejected"]] == [2, 3, 4, 5, 6, 7]
    assert body["rejected"][0]["msg"] == "data source 77 is not one of yours"
    assert "control characters" in body["rejected"][2]["msg"]
    assert set(IDMapping.objects.values_list("data_source_id", "dpuuid")) == {
        (21, "u2"),
        (77, "u1"),
    }
    assert IDSyncOptOut.objects.get().profile is None
    # Never mapped again, to anyone (ID-sync files: tests/partners/idsync/test_files.py).
    sources.clear()
    assert get("/ibs:dpid=21&dpuuid=u1", cookie="7" * 38).status == 200
    assert not IDMapping.objects.filter(data_source_id=21, dpuuid="u1").exists()


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"not json", 400), (b'{"ids": []}', 400), (b"[1]", 400), (b"\xff", 400)],
)
def test_opt_out_calls_that_are_not_lists_of_ids(
    client: Client, token: str, body: bytes, status: int
) -> None:
    answer = client.post(
        "/api/v1/optouts", body, content_type="application/json", headers=_bearer(token)
    )
    assert answer.status_code == status
    assert answer.json()["errors"][0]["field"] == "ids"
    assert client.post("/api/v1/optouts", b"{}", content_type="application/json").status_code == 401


def test_opt_outs_count_the_new_ones_not_the_ids_sent(client: Client, token: str) -> None:
    """An ID sent twice, or already opted out by an earlier call, is not counted again."""

    def send(*dpuuids: str) -> dict[str, Any]:
        ids = [{"dpid": 21, "dpuuid": dpuuid} for dpuuid in dpuuids]
        answer = client.post(
            "/api/v1/optouts", {"ids": ids}, content_type="application/json", headers=_bearer(token)
        )
        assert answer.status_code == 200, answer.content
        body: dict[str, Any] = answer.json()
        return body

    assert send("u1", "u2", "u1")["opted_out"] == 2
    assert send("u1", "u2")["opted_out"] == 0  # both opted out already
    assert send("u2", "u3", "u3")["opted_out"] == 1
    assert IDSyncOptOut.objects.count() == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # Past DATA_UPLOAD_MAX_MEMORY_SIZE (Django's HTML 400 before).
        (b'{"ids": [' + b'{"dpid": 21, "dpuuid": "u1"}, ' * 100_000 + b"1]}", 413),
        (b'{"ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # nested past recursion
        (b"[" * 200_000, 400),
        (
            b'{"ids": ['
            + b'{"dpid": 21, "dpuuid": "u1"},' * 1000
            + b'{"dpid": 21, "dpuuid": "x"}]}',
            400,
        ),
    ],
)
def test_oversized_or_deep_opt_out_bodies_get_the_apis_json_error(
    client: Client, token: str, body: bytes, status: int
) -> None:
    answer = client.post(
        "/api/v1/optouts", body, content_type="application/json", headers=_bearer(token)
    )
    assert answer.status_code == status
    assert answer["Content-Type"] == "application/json"
    [error] = answer.json()["errors"]
    assert error["field"] == "ids"
    assert error["msg"]
    assert not IDSyncOptOut.objects.exists()


def test_too_many_form_fields_get_the_apis_json_error(client: Client, token: str) -> None:
    fields = {f"f{n}": "x" for n in range(1500)}  # past DATA_UPLOAD_MAX_NUMBER_FIELDS
    answer = client.post("/api/v1/files", fields, headers=_bearer(token))
    assert answer.status_code == 400
    assert answer["Content-Type"] == "application/json"
    assert answer.json()["errors"][0]["msg"]


def test_an_opt_out_of_a_lone_surrogate_is_refused_in_words(client: Client, token: str) -> None:
    """JSON can spell a UTF-16 half (\\ud800) that is no text: a 500 from the database
    driver before; now that item is refused and the others are recorded."""
    body = b'{"ids": [{"dpid": 21, "dpuuid": "a\\ud800b"}, {"dpid": 21, "dpuuid": "ok"}]}'
    answer = client.post(
        "/api/v1/optouts", body, content_type="application/json", headers=_bearer(token)
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["opted_out"] == 1
    [rejected] = answer.json()["rejected"]
    assert rejected["index"] == 0
    assert "lone surrogate" in rejected["msg"]
