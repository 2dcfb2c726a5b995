"""The partner portal: login, a partner's own files and receipts, and nobody else's."""

from __future__ import annotations

import html
import io
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from openpyxl import load_workbook

from partners.models import Partner, Receipt
from tests.factories import DataSourceFactory, PartnerFactory, PartnerUserFactory, UserFactory
from tests.partners.inbound.conftest import Deliver, World

PASSWORD = "a-long-partner-pass-1"
BATCH = {"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu9\td_sid=10\n"}


def _login(partner: Partner, username: str) -> Client:
    user = UserFactory.create(username=username, email=f"{username}@partner.test")
    user.set_password(PASSWORD)
    user.save()
    PartnerUserFactory.create(user=user, partner=partner)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.fixture
def receipt(world: World, deliver: Deliver) -> Receipt:
    return deliver(BATCH)


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/portal/receipts/")
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/?next=/portal/receipts/")
    assert client.get("/portal/login/").status_code == 200


def test_a_partner_sees_its_files_and_receipts(world: World, receipt: Receipt) -> None:
    client = _login(world.partner, "acme")
    files = client.get("/portal/files/").content.decode()
    assert "ftp_dpm_21_1700000000.sync" in files
    assert "Processed" in files
    status = client.get("/portal/files/status.json").json()
    assert [(f["name"], f["status"], f["receipt"]) for f in status["files"]] == [
        ("ftp_dpm_21_1700000000.sync", "processed", receipt.pk)
    ]
    listing = client.get("/portal/receipts/").content.decode()
    assert f'href="/portal/receipts/{receipt.pk}/"' in listing
    page = client.get(f"/portal/receipts/{receipt.pk}/").content.decode()
    assert '<th>Stored records</th><td class="num">1</td>' in page
    assert "no matching id" in page
    download = client.get(f"/portal/receipts/{receipt.pk}/workbook/")
    book = load_workbook(io.BytesIO(b"".join(download.streaming_content)), read_only=True)  # type: ignore[attr-defined]
    assert len(list(book["Rejected lines"].iter_rows())) == 2  # header + the unmatched line


def test_another_partners_rows_answer_404(world: World, receipt: Receipt) -> None:
    other = _login(PartnerFactory.create(name="Other"), "other")
    assert other.get(f"/portal/receipts/{receipt.pk}/").status_code == 404
    assert other.get(f"/portal/receipts/{receipt.pk}/workbook/").status_code == 404
    assert "ftp_dpm_21" not in other.get("/portal/files/").content.decode()
    assert other.get("/portal/files/status.json").json()["files"] == []


def test_staff_view_the_portal_as_a_partner(
    world: World, receipt: Receipt, admin_client: Client
) -> None:
    assert admin_client.get("/portal/files/")["Location"] == "/admin/partners/partner/"
    partner_page = admin_client.get(f"/admin/partners/partner/{world.partner.pk}/change/")
    assert f'href="/portal/view-as/{world.partner.pk}/"' in partner_page.content.decode()
    response = admin_client.get(f"/portal/view-as/{world.partner.pk}/")
    assert response["Location"] == "/portal/files/"
    assert admin_client.get(f"/portal/receipts/{receipt.pk}/").status_code == 200


def test_password_reset_by_e_mail(world: World, settings: Any) -> None:
    """The link is on the configured base URL (before: the host the request named) and
    opens the form to choose a new password."""
    settings.PORTAL_BASE_URL = "https://portal.test:8443"
    _login(world.partner, "acme")
    client = Client()
    response = client.post("/portal/password-reset/", {"email": "acme@partner.test"})
    assert response.status_code == 302
    (message,) = mail.outbox
    assert message.to == ["acme@partner.test"]
    (link,) = [line for line in message.body.splitlines() if "/portal/password-reset/" in line]
    assert link.startswith("https://portal.test:8443/portal/password-reset/")
    form = client.get(link.removeprefix("https://portal.test:8443"), follow=True)
    assert b'name="new_password1"' in form.content


def test_login_is_csrf_protected(world: World, settings: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/portal/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403


def test_a_failed_file_names_its_problem_once(world: World, tmp_path: Any) -> None:
    """The batch's reason names the file (a batch may hold several); the file's own row
    already does, so it says the problem only (before: "x.sync.gz: x.sync.gz: …" read
    across the row)."""
    from partners.inbound.errors import InboundRejected
    from partners.inbound.processing import inbound_batch_process
    from partners.inbound.registration import inbound_files_register

    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    path.write_bytes(b"not gzip")
    batch = inbound_files_register(paths=[path]).batches[0]
    with pytest.raises(InboundRejected) as caught:
        inbound_batch_process(batch_id=batch.pk)
    assert str(caught.value).count("ftp_dpm_21_1700000000.sync") == 1  # the CLI's line too
    client = _login(world.partner, "acme")
    [row] = client.get("/portal/files/status.json").json()["files"]
    assert row["error"].startswith("the file is corrupt")
    assert (row["via"], row["via_label"]) == ("command", "Our team (command line)")
    page = client.get("/portal/files/").content.decode()
    assert page.count("ftp_dpm_21_1700000000.sync.gz") == 1


def test_the_upload_page_lists_the_partners_dpids_and_names_that_work(world: World) -> None:
    """Its own data sources and those shared with it, and a name of each kind made of them,
    each one the upload accepts; never another partner's DPIDs."""
    owner = PartnerFactory.create(name="Big Publisher")
    shared = DataSourceFactory.create(dpid=40, partner=owner, name="Publisher panel")
    shared.shared_with.add(world.partner)
    DataSourceFactory.create(dpid=31, partner=owner, name="Publisher private")
    client = _login(world.partner, "acme")
    page = client.get("/portal/upload/")
    sources = [(s["dpid"], s["owner"]) for s in page.context["sources"]]
    assert sources == [(21, ""), (22, ""), (40, "Big Publisher")]
    text = page.content.decode()
    assert "shared with you by Big Publisher" in text
    assert "Publisher private" not in text
    examples = {e.kind: e.names for e in page.context["examples"]}
    assert set(examples) == {
        "Traits",
        "Full replacement",
        "Compressed",
        "Split in parts",
        "Device IDs",
        "ID sync",
    }
    for names in examples.values():
        for name in names:
            assert name in text
            answer = client.get("/portal/upload/check-name.json", {"name": name}).json()
            assert answer == {"problem": None, "message": None}, name
    assert examples["Device IDs"][0].startswith("ftp_dpm_20914_21_")  # a global device DPID

    other = _login(PartnerFactory.create(name="Newcomer"), "newcomer")
    empty = other.get("/portal/upload/")
    assert empty.context["sources"] == []
    assert "You have no data source yet" in empty.content.decode()


def test_the_api_token_page_says_no_more_than_there_is(world: World) -> None:
    """A first token replaces nothing (before: "the previous one no longer works" either
    way); a second one says the first stopped working. Both link to the API help."""
    client = _login(world.partner, "acme")
    first = client.get("/portal/api-token/").content.decode()
    assert "You have no token yet" in first
    assert 'href="/portal/api/"' in first
    made = client.post("/portal/api-token/").content.decode()
    assert 'id="api-token"' in made
    assert "previous" not in made
    again = client.post("/portal/api-token/").content.decode()
    assert "Your previous token no longer works" in again


def test_the_api_help_page_gives_the_calls_on_the_portals_address(
    world: World, receipt: Receipt, settings: Any
) -> None:
    """The README's curl examples, on PORTAL_BASE_URL, with the partner's own DPID and
    receipt; in the nav."""
    settings.PORTAL_BASE_URL = "https://portal.partner-test.example"
    page = _login(world.partner, "acme").get("/portal/api/")
    text = page.content.decode()
    assert 'href="/portal/api/" class="active"' in text
    commands = [e.command for e in page.context["examples"]]
    api = "https://portal.partner-test.example/api/v1"
    auth = 'curl -H "Authorization: Bearer $TOKEN" \\\n  '  # one option a line
    assert commands[0] == f"{auth}{api}/files"
    assert commands[1] == f"{auth}{api}/receipts/{receipt.pk}"
    assert any("-F file=@ftp_dpm_21_" in c and c.endswith(f"{api}/dry-run") for c in commands)
    assert any('"dpid": 21' in c and c.endswith(f"{api}/optouts") for c in commands)
    assert html.escape(commands[2]) in text
    # Another partner's page shows its own (no receipt: the README's placeholder ID).
    other = _login(PartnerFactory.create(name="Other"), "other").get("/portal/api/")
    assert f"/receipts/{receipt.pk}" not in other.content.decode()


def test_staff_viewing_as_a_partner_see_a_banner_back_to_the_admin(
    world: World, admin_client: Client
) -> None:
    admin_client.get(f"/portal/view-as/{world.partner.pk}/")
    page = admin_client.get("/portal/files/").content.decode()
    assert 'id="view-as"' in page
    assert "You are viewing the portal as <strong>Acme Data</strong> (PID 1001)" in page
    assert f'href="/admin/partners/partner/{world.partner.pk}/change/">Back to the admin' in page
    partner_page = _login(world.partner, "acme").get("/portal/files/").content.decode()
    assert 'id="view-as"' not in partner_page  # the partner's own users see no banner


def test_a_favicon_for_the_portal_and_the_admin(client: Client) -> None:
    """/favicon.ico answered 404; browsers ask for it on every page, the admin's too."""
    from django.contrib.staticfiles import finders

    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon["Content-Type"] == "image/x-icon"
    data = b"".join(icon.streaming_content)  # type: ignore[attr-defined]
    assert data[:6] == b"\x00\x00\x01\x00\x02\x00"  # an ICO file of two images (16, 32 px)
    page = client.get("/portal/login/").content.decode()
    assert '<link rel="icon" href="/favicon.ico"' in page
    assert 'href="/static/partners/favicon.svg" type="image/svg+xml"' in page
    assert finders.find("partners/favicon.svg")
