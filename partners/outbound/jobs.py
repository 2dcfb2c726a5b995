"""RQ jobs of the outbound exports: thin."""

from __future__ import annotations

from partners.models import Destination, OutboundRun
from partners.outages import waits_out_database_outages
from partners.outbound import runs


@waits_out_database_outages
def outbound_run_job(destination_id: int) -> int | None:
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return None
    try:
        return runs.outbound_run(destination=destination).pk
    except runs.OutboundRunInProgress:
        return None  # clicked twice: the run going on is the one asked for


@waits_out_database_outages
def outbound_run_resend_job(run_id: int) -> int | None:
    run = OutboundRun.objects.select_related("destination").filter(pk=run_id).first()
    if run is None:
        return None
    return runs.outbound_run_resend(run=run).pk
