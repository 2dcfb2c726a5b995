"""Receipt e-mails: who gets them, what they say, and their sending through RQ."""

from __future__ import annotations

import io

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, Func, Q, Value
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from partners.models import Receipt, ReceiptDelivery, ReceiptRecipient
from partners.receipts.render import receipt_context
from partners.receipts.workbook import receipt_workbook_name, receipt_workbook_write

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def receipt_recipients(receipt: Receipt) -> list[str]:
    """The internal partner-solutions list always; the partner's enabled recipients (all
    receipts, or only those of their data source) when the partner has receipts enabled."""
    batch = receipt.batch
    addresses = list(settings.PARTNER_SOLUTIONS_EMAILS)
    if batch.partner.receipts_enabled:
        sources = {batch.target_id, batch.data_source_id} - {None}
        partner_addresses = (
            ReceiptRecipient.objects.filter(partner=batch.partner, enabled=True)
            .filter(Q(data_source__isnull=True) | Q(data_source__in=sources))
            .order_by("email")
            .values_list("email", flat=True)
        )
        addresses += [a for a in partner_addresses if a not in addresses]
    return addresses


def receipt_subject(receipt: Receipt) -> str:
    batch = receipt.batch
    return f"Server-to-Server processing result: {batch.partner.name} (DPID {batch.target.dpid})"


def receipt_recipient_is_internal(address: str) -> bool:
    """Whether ``address`` is on the internal list (staff, who read receipts in the admin)
    rather than a partner's (who read them in the portal)."""
    return address.casefold() in {a.casefold() for a in settings.PARTNER_SOLUTIONS_EMAILS}


def receipt_links(receipt: Receipt, *, internal: bool) -> dict[str, str]:
    """The receipt and its workbook, where the reader can open them: the admin for the
    internal list, the portal for the partner (who cannot open the admin)."""
    names = (
        ("admin:partners_receipt_change", "admin:partners_receipt_workbook")
        if internal
        else ("portal:receipt", "portal:receipt_workbook")
    )
    base = settings.PORTAL_BASE_URL
    return {
        "receipt_url": base + reverse(names[0], args=[receipt.pk]),
        "workbook_url": base + reverse(names[1], args=[receipt.pk]),
    }


def receipt_workbook_bytes(receipt: Receipt) -> bytes:
    """The error workbook of the receipt (empty when no line was rejected)."""
    workbook = io.BytesIO()
    if receipt.batch.line_errors.exists():
        receipt_workbook_write(receipt, workbook)
    return workbook.getvalue()


def receipt_email_build(
    receipt: Receipt, *, recipients: list[str], internal: bool, workbook: bytes | None = None
) -> EmailMultiAlternatives:
    """The e-mail of a receipt (SPEC §4) for one audience (``internal``: the internal list;
    otherwise the partner's recipients): text and HTML parts with the links that reader can
    open, the error workbook attached when it is small enough, otherwise linked."""
    context = receipt_context(receipt)
    if workbook is None:
        workbook = receipt_workbook_bytes(receipt)
    attach = 0 < len(workbook) <= settings.RECEIPT_ATTACHMENT_MAX_BYTES
    context |= {
        "attached": attach,
        "internal": internal,
        **receipt_links(receipt, internal=internal),
    }
    message = EmailMultiAlternatives(
        subject=receipt_subject(receipt),
        body=render_to_string("receipts/email.txt", context),
        to=recipients,
    )
    message.attach_alternative(render_to_string("receipts/email.html", context), "text/html")
    if attach:
        message.attach(receipt_workbook_name(receipt), workbook, XLSX)
    return message


def receipt_delivery_record(
    *, receipt: Receipt, recipients: list[str] | None = None, requested_by: str = ""
) -> ReceiptDelivery:
    """Record a sending of the receipt (pending), to its recipients unless others are given;
    :func:`partners.receipts.queueing.receipt_delivery_request` records and queues it."""
    return ReceiptDelivery.objects.create(
        receipt=receipt,
        recipients=recipients or receipt_recipients(receipt),
        requested_by=requested_by,
    )


def receipt_delivery_send(*, delivery: ReceiptDelivery) -> None:
    """Send one delivery: one message per recipient not yet in ``sent_to``, each address
    recorded (its own committed UPDATE) as soon as the SMTP server has taken its message. A
    retry, after a failure or a worker killed mid-send, sends only to the rest; the worst a
    crash can do is lose the record of the one message in flight (sent again). A failure is
    recorded on the delivery and raised again, so that RQ retries the job; the receipt and
    the batch are never touched."""
    if delivery.status == ReceiptDelivery.Status.SENT:
        return
    delivery.attempts += 1
    pending = [address for address in delivery.recipients if address not in delivery.sent_to]
    try:
        if pending:
            receipt = delivery.receipt
            workbook = receipt_workbook_bytes(receipt)  # written once for every message
            messages: dict[bool, EmailMultiAlternatives] = {}  # one per audience
            with get_connection() as smtp:  # one SMTP session, one message per address
                for address in pending:
                    internal = receipt_recipient_is_internal(address)
                    if internal not in messages:
                        messages[internal] = receipt_email_build(
                            receipt, recipients=[address], internal=internal, workbook=workbook
                        )
                        messages[internal].connection = smtp
                    message = messages[internal]
                    message.to = [address]  # nobody sees another recipient's address
                    message.send()
                    _delivery_sent_to(delivery, address)
    except Exception as exc:
        delivery.status = ReceiptDelivery.Status.FAILED
        delivery.error = f"{type(exc).__name__}: {exc}"[:2000]
        delivery.save(update_fields=["status", "error", "attempts"])
        raise
    delivery.status = ReceiptDelivery.Status.SENT
    delivery.error = ""
    delivery.sent_at = timezone.now()
    delivery.save(update_fields=["status", "error", "attempts", "sent_at"])


def _delivery_sent_to(delivery: ReceiptDelivery, address: str) -> None:
    # Appended in the database (not the list read at the start), committed at once.
    with transaction.atomic():
        ReceiptDelivery.objects.filter(pk=delivery.pk).update(
            sent_to=Func(F("sent_to"), Value(address), function="array_append")
        )
    delivery.sent_to = [*delivery.sent_to, address]
