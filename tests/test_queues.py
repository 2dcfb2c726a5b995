"""The RQ wiring: real Redis, a real worker, and jobs sent only once the data is committed."""

from __future__ import annotations

from typing import Any

import django_rq
import pytest
from django.conf import settings
from django.db import transaction
from rq import SimpleWorker

pytestmark = pytest.mark.django_db


def test_every_queue_talks_to_the_configured_redis() -> None:
    for name in settings.RQ_QUEUE_NAMES:
        assert django_rq.get_connection(name).ping() is True


def test_a_job_enqueued_in_a_transaction_is_sent_on_commit_and_run_by_a_worker(
    django_capture_on_commit_callbacks: Any,
) -> None:
    queue = django_rq.get_queue("default")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        queue.enqueue("operator.add", 2, 3)
        assert queue.count == 0  # not before the data it needs is committed
    assert queue.count == 1

    job = queue.jobs[0]
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    job.refresh()
    assert job.is_finished
    assert job.return_value() == 5
