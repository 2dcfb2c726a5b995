"""Receipts in the admin: read-only, re-sent to all or to one address, workbook download."""

from __future__ import annotations

import html
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


def _text(html_page: str) -> str:
    """The page as read: tags dropped, entities read, spaces collapsed."""
    import html

    from django.utils.html import strip_tags

    return " ".join(html.unescape(strip_tags(html_page)).split())


def _main(html_page: str) -> str:
    """The page's own content (not the navigation beside it, which lists "Pending records")."""
    return html_page.split('id="content-main"')[1]


def _rows(html_page: str, table_id: str) -> list[list[str]]:
    """The cells of a table's body, row by row, as read."""
    import re

    table = html_page.split(f'<table id="{table_id}"')[1].split("</table>")[0]
    body = table.split("<tbody>")[1]
    return [
        [_text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_a_trait_receipt_page_shows_each_counter_once_and_its_errors_as_a_table(
    world: World, deliver: Deliver, admin_client: Client
) -> None:
    """Before: every counter twice (the e-mail's text, then every column of the receipt),
    the ID-sync counters at 0 on a trait receipt, the error sample as raw JSON."""
    from partners.receipts.render import receipt_counter_rows, receipt_error_rows

    receipt = deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu9\td_sid=10\nbad line\n"})
    page = admin_client.get(f"/admin/partners/receipt/{receipt.pk}/change/").content.decode()
    assert _rows(page, "counters") == [
        [label, str(value)] for label, value in receipt_counter_rows(receipt)
    ]
    text = _text(_main(page))
    for label, _ in receipt_counter_rows(receipt):
        assert text.count(label) == 1, label
    for idsync_only in ("Mappings created", "Mappings refreshed", "Rejected"):
        assert idsync_only.lower() not in text.lower()
    errors = receipt_error_rows(receipt)
    assert len(errors) == 2
    assert _rows(page, "errors") == [
        [e["file"], str(e["line"]), e["kind_label"], e["reason"], " ".join(e["start"].split())]
        for e in errors
    ]
    assert '"reason":' not in html.unescape(page)  # no JSON
    assert "Server-to-Server processing result: Acme Data (DPID 21)" in text  # its subject
    assert "Pending records" in text  # a trait batch's own figures stay


def test_an_id_sync_receipt_page_shows_only_id_sync_counters(
    world: World, deliver: Deliver, admin_client: Client
) -> None:
    from partners.receipts.render import receipt_counter_rows

    receipt = deliver({"adobe_id_0_21_1700000000.sync": f"{world.u1.uuid}\tnew-id\n"})
    assert receipt.mappings_created == 1
    page = admin_client.get(f"/admin/partners/receipt/{receipt.pk}/change/").content.decode()
    assert _rows(page, "counters") == [
        ["Records received", "1"],
        ["Mappings created", "1"],
        ["Mappings refreshed", "0"],
        ["Rejected", "0"],
    ]
    assert _rows(page, "counters") == [[k, str(v)] for k, v in receipt_counter_rows(receipt)]
    text = _text(_main(page)).lower()
    for trait_only in ("stored records", "format errors", "no matching id", "pending records"):
        assert trait_only not in text, trait_only
    assert 'id="errors"' not in page  # nothing rejected: no error table
