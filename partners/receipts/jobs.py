"""RQ jobs of receipts: thin, they load by ID and call one service."""

from __future__ import annotations

from partners.models import ReceiptDelivery
from partners.outages import waits_out_database_outages
from partners.receipts import services


@waits_out_database_outages
def receipt_delivery_send_job(delivery_id: int) -> None:
    delivery = (
        ReceiptDelivery.objects.select_related("receipt__batch").filter(pk=delivery_id).first()
    )
    if delivery is None:
        return  # the receipt was deleted since
    services.receipt_delivery_send(delivery=delivery)
