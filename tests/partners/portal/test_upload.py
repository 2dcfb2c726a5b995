"""Uploads through the portal: checked by name and owner, limited while streaming, queued."""

from __future__ import annotations

import gzip
import html
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import django_rq
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from partners.models import InboundBatch, InboundFile
from tests.factories import DataSourceFactory, PartnerFactory
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login

CONTENT = gzip.compress(b"u1\td_sid=10\nu9\td_sid=10\n")


@pytest.fixture
def acme(world: World, settings: Any, tmp_path: Path) -> Client:
    settings.MEDIA_ROOT = tmp_path / "media"
    return _login(world.partner, "acme")


def _post(client: Client, name: str, content: bytes = CONTENT) -> Any:
    return client.post("/portal/upload/", {"file": SimpleUploadedFile(name, content)})


def test_an_upload_is_registered_and_queued(
    acme: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    queue = django_rq.get_queue("inbound")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(acme, "ftp_dpm_21_1700000000.sync.gz")
    assert response.status_code == 302
    assert response["Location"] == "/portal/files/"
    file = InboundFile.objects.get()
    assert (file.partner, file.name, file.size) == (world.partner, file.name, len(CONTENT))
    assert file.batch is not None
    assert file.batch.status == InboundBatch.Status.QUEUED
    assert [job.id for job in queue.jobs] == [f"inbound-batch-{file.batch.pk}"]
    assert file.via == InboundFile.Via.UPLOAD
    listing = acme.get("/portal/files/").content.decode()
    assert "ftp_dpm_21_1700000000.sync.gz" in listing
    assert "Queued" in listing
    assert '<td data-label="Came by">Upload</td>' in listing


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("data.csv", "'data.csv' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_"),
        ("/etc/passwd", "'passwd' does not start with"),  # Django keeps the last component
        ("ftp_dpm_21_1234567.sync", "'1234567' is not a 10-digit timestamp"),
        ("ftp_dpm_31_1700000000.sync", "belongs to another partner"),
        ("ftp_dpm_99_1700000000.sync", "DPID 99 is not a data source we know"),
    ],
)
def test_refused_uploads_say_why_next_to_the_field(acme: Client, name: str, message: str) -> None:
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create())
    response = _post(acme, name)
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    errors = page.split('id="file-errors"')[1].split("</ul>")[0]
    assert message in errors
    assert not InboundFile.objects.exists()


def test_path_components_and_nul_bytes_never_reach_the_disk(acme: Client, settings: Any) -> None:
    _post(acme, "../../../ftp_dpm_21_1700000000.sync.gz")
    _post(acme, "ftp_dpm_21_1700000001\x00.sync.gz")
    stored = list(InboundFile.objects.values_list("storage", "path"))
    assert [PurePosixPath(path).name for _, path in stored] == [
        "ftp_dpm_21_1700000000.sync.gz",
        "ftp_dpm_21_1700000001.sync.gz",
    ]
    assert {storage for storage, _ in stored} == {"default"}
    uploads = (Path(settings.MEDIA_ROOT) / "uploads").resolve()
    on_disk = [Path(default_storage.path(path)).resolve() for _, path in stored]
    assert all(uploads in path.parents and path.is_file() for path in on_disk)


def test_the_upload_limit_is_enforced_while_streaming(acme: Client, settings: Any) -> None:
    settings.PORTAL_UPLOAD_MAX_BYTES = 16
    response = _post(acme, "ftp_dpm_21_1700000000.sync.gz")
    assert "larger than the 16" in response.content.decode()
    assert not InboundFile.objects.exists()


def test_the_name_is_checked_before_upload(acme: Client) -> None:
    good = acme.get("/portal/upload/check-name.json", {"name": "ftp_dpm_21_1700000000.sync"})
    assert good.json() == {"problem": None, "message": None}
    bad = acme.get("/portal/upload/check-name.json", {"name": "ftp_dpm_21_17.sync"})
    assert "'17' is not a 10-digit timestamp" in bad.json()["problem"]
    # What the page shows names the file once, even when the grammar quotes it.
    unknown = acme.get("/portal/upload/check-name.json", {"name": "traits.tsv"}).json()
    assert unknown["problem"].startswith("'traits.tsv' does not start with ftp_dpm_")
    assert unknown["message"] == (
        "traits.tsv: the name does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_"
    )


def test_uploads_need_a_csrf_token(world: World, acme: Client) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = acme.cookies
    response = strict.post(
        "/portal/upload/", {"file": SimpleUploadedFile("ftp_dpm_21_1700000000.sync", b"x")}
    )
    assert response.status_code == 403
    assert not InboundFile.objects.exists()


HOSTILE_NAMES = [
    ("ftp_dpm_21_1700000000.sync.99999999999", "part number 99999999999 is too large"),
    ("ftp_dpm_99999999999_1700000000.sync", "'99999999999' is not a DPID (at most 2147483647)"),
    ("adobe_id_0_21_1700000000.sync.2147483648.gz", "part number 2147483648 is too large"),
]


@pytest.mark.parametrize(("name", "message"), HOSTILE_NAMES)
def test_hostile_names_are_refused_in_words_and_nothing_is_kept(
    acme: Client, world: World, settings: Any, name: str, message: str
) -> None:
    from partners.portal.api import api_token_rotate

    response = _post(acme, name)
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert message in page.split('id="file-errors"')[1].split("</ul>")[0]

    token = api_token_rotate(partner=world.partner, by="test")
    api = Client().post(
        "/api/v1/files",
        {"file": SimpleUploadedFile(name, CONTENT)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert api.status_code == 400
    assert message in api.json()["errors"][0]["msg"]

    assert not InboundFile.objects.exists()
    uploads = Path(settings.MEDIA_ROOT) / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def _name_check_url(client: Client) -> str:
    """The name-check address as the upload page's script builds it (before the name)."""
    page = client.get("/portal/upload/").content.decode()
    match = re.search(r'fetch\("([^"]+\?name=)" \+ encodeURIComponent\(name\)', page)
    assert match, "the upload page no longer asks the server about the name"
    return match.group(1)


def _encode_uri_component(text: str) -> str:
    return quote(text, safe="-_.!~*'()")  # what the page's encodeURIComponent sends


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ftp_dpm_21_1700000000.sync", None),  # its own DPID
        ("ftp_dpm_21_22_1700000000.overwrite.gz", None),  # its own, another own target
        ("ftp_dpm_41_1700000000.sync", None),  # another partner's, shared with it
        ("ftp_dpm_20914_21_1700000000.sync", None),  # a global device DPID, its own target
        ("adobe_id_0_21_1700000000.sync", None),
        ("adobe_id_21_22_1700000000.sync.2.gz", None),
        ("ftp_dpm_31_1700000000.sync", "data source 31 belongs to another partner"),
        ("ftp_dpm_21_31_1700000000.sync", "data source 31 belongs to another partner"),
        ("ftp_dpm_99_1700000000.sync", "DPID 99 is not a data source we know"),
        ("ftp_dpm_21_99_1700000000.sync", "DPID 99 is not a data source we know"),
        ("adobe_id_0_31_1700000000.sync", "data source 31 belongs to another partner"),
        ("c2c_id_31_21_1700000000.sync", "data source 31 belongs to another partner"),
        ("adobe_id_0_21_99_1700000000.sync", "DPID 99 is not a data source we know"),
        ("ftp_dpm_21_17.sync", "'17' is not a 10-digit timestamp"),
        ("data.csv", "'data.csv' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_"),
    ],
)
def test_the_name_check_knows_ownership_before_the_upload(
    acme: Client, world: World, name: str, problem: str | None
) -> None:
    """The page's own call (its URL, GET, ?name=) refuses what the upload would refuse,
    in the words of the upload (the registration's checks), and lets through what it takes."""
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create())
    shared = DataSourceFactory.create(dpid=41, partner=PartnerFactory.create())
    shared.shared_with.add(world.partner)
    answer = acme.get(_name_check_url(acme) + _encode_uri_component(name))
    assert answer.status_code == 200
    verdict = answer.json()["problem"]
    if problem is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert problem in verdict

    response = _post(acme, name)  # and the upload agrees, word for word
    if problem is None:
        assert response.status_code == 302
    else:
        page = html.unescape(response.content.decode())
        errors = page.split('id="file-errors"')[1].split("</ul>")[0]
        assert f"<li>{verdict}</li>" in errors
        assert not InboundFile.objects.exists()
