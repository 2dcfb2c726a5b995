"""Alerts: a batch that mostly failed, and data sources gone silent."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import django_rq
import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from rq.job import Job

from partners.models import DataSource
from partners.receipts.alerts import alert_send, silent_data_sources
from tests.factories import DataSourceFactory, InboundBatchFactory, PartnerFactory, ReceiptFactory
from tests.partners.inbound.conftest import Deliver, World


def _alert_jobs() -> list[Job]:
    return [job for job in django_rq.get_queue("notify").jobs if job.func is alert_send]


def test_a_batch_with_too_many_failed_records_alerts_the_internal_list(
    world: World, deliver: Deliver, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    settings.ALERT_FAILED_SHARE = 0.5
    django_rq.get_queue("notify").empty()
    with django_capture_on_commit_callbacks(execute=True):
        deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\nu9\td_sid=10\n"})  # 50 %: no alert
        deliver({"ftp_dpm_21_1700000001.sync": "u1\td_sid=10\nu9\td_sid=10\nu9\td_sid=11\n"})
    (job,) = _alert_jobs()  # queued on the notify queue, once the batch committed
    mail.outbox.clear()
    job.perform()
    (alert,) = mail.outbox
    assert alert.subject == "[S2S ALERT] 67% of the records failed: Acme Data (DPID 21)"
    assert alert.to == ["solutions@platform.test"]
    assert "2 of 3 records failed (66.7%; the alert threshold is 50%)" in alert.body
    assert "no matching ID 2" in alert.body


@pytest.mark.django_db
def test_silent_data_sources_are_listed_in_one_alert(settings: Any) -> None:
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    partner = PartnerFactory.create(name="Acme Data")
    old = timezone.now() - timedelta(days=30)
    quiet = DataSourceFactory.create(dpid=41, partner=partner, name="quiet")
    DataSourceFactory.create(dpid=42, partner=partner, name="never")
    busy = DataSourceFactory.create(dpid=43, partner=partner, name="busy")
    DataSourceFactory.create(dpid=44, partner=partner, name="new")  # created today: not yet
    DataSource.objects.filter(pk__in=[41, 42, 43]).update(created_at=old)
    ReceiptFactory.create(
        batch=InboundBatchFactory.create(partner=partner, target=quiet),
        job_start=timezone.now() - timedelta(days=5),
    )
    ReceiptFactory.create(batch=InboundBatchFactory.create(partner=partner, target=busy))
    assert [(s.dpid, last is None) for s, last in silent_data_sources(days=3)] == [
        (41, False),
        (42, True),
    ]
    out = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        sent: list[dict[str, str]] = []
        patch.setattr(
            "partners.receipts.alerts._alert_enqueue", lambda **kwargs: sent.append(kwargs)
        )
        call_command("alerts_check", "--days", "3", stdout=out)
    assert "2 data sources silent for 3 days: alert queued" in out.getvalue()
    (alert,) = sent
    assert alert["subject"] == "2 data source(s) sent nothing for 3 days"
    assert "DPID 42 never: never sent a batch" in alert["body"]
    assert "DPID 41 quiet: last batch" in alert["body"]
    alert_send(**alert)
    assert mail.outbox[-1].subject.startswith("[S2S ALERT] 2 data source(s)")
