"""Uploads kept in S3 (a real S3 API: moto in server mode), read back as streams."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import pytest
from botocore.response import StreamingBody
from django.test import Client

from partners.inbound.processing import inbound_batch_process
from partners.models import InboundBatch, InboundFile
from partners.storage import stored_file_open
from tests.conftest import s3_resource
from tests.factories import DataSourceFactory, PartnerFactory
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login
from tests.partners.portal.test_upload import _post

CONTENT = gzip.compress(b"u1\td_sid=10,d_sid=11\nu9\td_sid=10\n")


@pytest.fixture
def bucket(s3_default_storage: str, s3_endpoint: str) -> Any:
    return s3_resource(s3_endpoint).Bucket(s3_default_storage)


def test_an_upload_goes_to_s3_and_is_processed_from_there(world: World, bucket: Any) -> None:
    client = _login(world.partner, "acme")
    response = _post(client, "ftp_dpm_21_1700000000.sync.gz", CONTENT)
    assert response.status_code == 302

    file = InboundFile.objects.get()
    assert file.storage == "default"
    assert file.path.startswith(f"uploads/{world.partner.pk}/")
    assert file.sha256 == hashlib.sha256(CONTENT).hexdigest()  # hashed while it streamed
    stored = bucket.Object(file.path)
    assert stored.content_length == len(CONTENT)
    # django-storages marks a .gz object Content-Encoding: gzip; it must be inflated once.
    assert stored.content_encoding == "gzip"

    with stored_file_open(file.storage, file.path) as stream:
        assert isinstance(stream, StreamingBody)  # read from the socket, not downloaded first
        assert stream.read() == CONTENT

    assert file.batch is not None
    receipt = inbound_batch_process(batch_id=file.batch.pk)
    assert (receipt.records_received, receipt.no_matching_ids, receipt.stored_records) == (2, 1, 1)
    assert world.held(world.u1) == {10, 11}


def test_a_checked_file_in_s3_is_processed_without_uploading_it_again(
    world: World, bucket: Any
) -> None:
    client = _login(world.partner, "acme")
    page = _post_check(client, "ftp_dpm_21_1700000000.sync.gz")
    assert "Process this file" in page
    token = page.split('name="token" value="')[1].split('"')[0]
    assert [o.key for o in bucket.objects.all()] == [
        f"uploads/{world.partner.pk}/{token}/ftp_dpm_21_1700000000.sync.gz"
    ]
    assert not InboundFile.objects.exists()

    response = client.post(
        "/portal/upload/process/", {"token": token, "name": "ftp_dpm_21_1700000000.sync.gz"}
    )
    assert response.status_code == 302
    file = InboundFile.objects.get()
    assert file.sha256 == hashlib.sha256(CONTENT).hexdigest()  # read back from S3 to hash
    assert file.batch is not None
    assert file.batch.status == InboundBatch.Status.QUEUED


def test_a_refused_upload_leaves_nothing_in_the_bucket(world: World, bucket: Any) -> None:
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create())
    client = _login(world.partner, "acme")
    response = _post(client, "ftp_dpm_31_1700000000.sync.gz", CONTENT)  # stored, then refused
    assert "data source 31 belongs to another partner" in response.content.decode()
    assert list(bucket.objects.all()) == []
    assert not InboundFile.objects.exists()


def test_a_file_gone_from_storage_fails_its_batch_with_a_clear_reason(
    world: World, bucket: Any
) -> None:
    client = _login(world.partner, "acme")
    _post(client, "ftp_dpm_21_1700000000.sync.gz", CONTENT)
    file = InboundFile.objects.get()
    bucket.Object(file.path).delete()
    assert file.batch is not None
    with pytest.raises(Exception, match="no longer there"):
        inbound_batch_process(batch_id=file.batch.pk)
    file.refresh_from_db()
    assert file.status == InboundFile.Status.FAILED
    assert file.error == "ftp_dpm_21_1700000000.sync.gz: the file is no longer there"


def _post_check(client: Client, name: str) -> str:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        "/portal/upload/", {"file": SimpleUploadedFile(name, CONTENT), "check": "1"}
    )
    assert response.status_code == 200
    return response.content.decode()
