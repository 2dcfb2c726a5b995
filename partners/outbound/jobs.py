"""RQ jobs of the outbound exports: thin."""

from __future__ import annotations

from partners.models import Destination
from partners.outbound.services import outbound_run


def outbound_run_job(destination_id: int) -> int | None:
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return None
    return outbound_run(destination=destination).pk
