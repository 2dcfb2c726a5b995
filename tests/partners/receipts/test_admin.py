"""Receipts in the admin: read-only, re-sent to all or to one address, workbook download."""

from __future__ import annotations

import io
from typing import Any

from django.core import mail
from django.test import Client
from openpyxl import load_workbook

from partners.models import Receipt, ReceiptDelivery
from partners.receipts.jobs import receipt_delivery_send_job
from tests.partners.inbound.conftest import Deliver, World

BATCH = {"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu9\td_sid=10\n"}


def test_receipt_page_shows_the_e_mail_text_and_is_read_only(
    world: World, deliver: Deliver, admin_client: Client
) -> None:
    receipt = deliver(BATCH)
    page = admin_client.get(f"/admin/partners/receipt/{receipt.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Server-to-Server processing result: Acme Data (DPID 21)" in text
    assert "Re-send" in text
    assert "Error workbook (XLSX)" in text
    assert 'name="_save"' not in text  # read-only: no save button
    listing = admin_client.get("/admin/partners/receipt/?has_errors=yes")
    assert listing.status_code == 200
    assert "ftp_dpm_21_1700000000.sync" in listing.content.decode()
    assert (
        "0 receipts" in admin_client.get("/admin/partners/receipt/?has_errors=no").content.decode()
    )


def test_resend_to_one_address_and_to_all(
    world: World,
    deliver: Deliver,
    admin_client: Client,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    receipt = deliver(BATCH)
    with django_capture_on_commit_callbacks() as queued:
        response = admin_client.post(
            f"/admin/partners/receipt/{receipt.pk}/resend/", {"email": "someone@partner.test"}
        )
    assert response.status_code == 302
    assert len(queued) == 1  # the RQ job is sent once the request's transaction commits
    delivery = receipt.deliveries.first()
    assert delivery is not None
    assert delivery.recipients == ["someone@partner.test"]
    assert delivery.requested_by == "admin"
    mail.outbox.clear()
    receipt_delivery_send_job(delivery.pk)
    assert [m.to for m in mail.outbox] == [["someone@partner.test"]]

    admin_client.post(
        "/admin/partners/receipt/",
        {"action": "resend_to_all", "_selected_action": [receipt.pk]},
    )
    latest = receipt.deliveries.first()
    assert latest is not None
    assert latest.recipients == ["solutions@platform.test"]
    assert ReceiptDelivery.objects.filter(receipt=receipt).count() == 3  # automatic + 2


def test_workbook_download(world: World, deliver: Deliver, admin_client: Client) -> None:
    receipt: Receipt = deliver(BATCH)
    response = admin_client.get(f"/admin/partners/receipt/{receipt.pk}/workbook/")
    assert response.status_code == 200
    assert "errors-ftp_dpm_21_1700000000.sync.xlsx" in response["Content-Disposition"]
    book = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True)  # type: ignore[attr-defined]
    rows = list(book["Rejected lines"].iter_rows(values_only=True))
    assert rows[1][:3] == ("ftp_dpm_21_1700000000.sync", 2, "no matching id")
