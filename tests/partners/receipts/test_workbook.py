"""The error workbook as a partner opens it: columns wide enough to read, the start of each
line with its tab shown as →, and a partner's control characters never breaking it."""

from __future__ import annotations

import io

from django.test import Client
from openpyxl import load_workbook

from partners.receipts.workbook import receipt_workbook_write, text_visible
from tests.partners.inbound.conftest import Deliver, World
from tests.partners.portal.test_pages import _login

NAME = "ftp_dpm_21_1700000000.sync"
# A control character in a user ID and in a signal, and an unmatched user ID.
LINES = "u1\x01\td_sid=10\nu2\td_sid=10\x02x\nu9\td_sid=10\n"


def test_a_tab_is_an_arrow_and_a_control_character_its_symbol() -> None:
    assert text_visible("u9\td_sid=10") == "u9→d_sid=10"
    assert text_visible("a\x01b\rc\x7f") == "a␁b␍c␡"
    assert text_visible("plain é") == "plain é"


def test_the_workbook_reads_well_and_survives_control_characters(
    world: World, deliver: Deliver
) -> None:
    """Before: the first line's U+0001 made openpyxl refuse the cell, so neither the
    download nor the e-mail attachment could be made; raw tabs; every column 8 wide."""
    receipt = deliver({NAME: LINES})
    stream = io.BytesIO()
    receipt_workbook_write(receipt, stream)
    book = load_workbook(io.BytesIO(stream.getvalue()))
    errors = book["Rejected lines"]
    rows = list(errors.iter_rows(values_only=True))
    assert [(r[1], r[2], r[4]) for r in rows[1:]] == [
        (1, "invalid id", "u1␁→d_sid=10"),
        (2, "format error", "u2→d_sid=10␂x"),
        (3, "no matching id", "u9→d_sid=10"),
    ]
    assert rows[2][3] == "'d_sid=10␂x': d_sid needs a trait ID (a positive number)"
    assert not any("\t" in str(cell) for row in rows for cell in row)
    widths = {c: errors.column_dimensions[c].width for c in "ABCDE"}
    assert widths["A"] >= len(NAME)  # the longest file name of the batch fits
    assert min(widths["D"], widths["E"]) >= 50  # reasons and line starts
    assert errors.freeze_panes == "A2"
    summary = book["Summary"]
    assert summary.column_dimensions["A"].width >= len(
        "Total users with traits that failed validation"
    )


def test_the_receipt_page_shows_the_tab_as_an_arrow(world: World, deliver: Deliver) -> None:
    receipt = deliver({NAME: LINES})
    client: Client = _login(world.partner, "acme")
    page = client.get(f"/portal/receipts/{receipt.pk}/").content.decode()
    errors = page.split('id="errors"')[1]
    assert "<code>u9→d_sid=10</code>" in errors
    assert "<code>u1␁→d_sid=10</code>" in errors
    assert "\t" not in errors
    download = client.get(f"/portal/receipts/{receipt.pk}/workbook/")
    assert download.status_code == 200  # before: a server error (IllegalCharacterError)


def test_the_receipt_e_mail_is_built_with_its_workbook(world: World, deliver: Deliver) -> None:
    """Before: building the e-mail raised IllegalCharacterError with the workbook, so the
    receipt of such a batch was never sent."""
    from partners.receipts.services import receipt_email_build

    receipt = deliver({NAME: LINES})
    message = receipt_email_build(receipt, recipients=["a@partner.test"], internal=False)
    ((name, content, _),) = message.attachments
    assert name == f"errors-{NAME}.xlsx"
    rows = list(load_workbook(io.BytesIO(content))["Rejected lines"].iter_rows(values_only=True))
    assert len(rows) == 1 + 3
