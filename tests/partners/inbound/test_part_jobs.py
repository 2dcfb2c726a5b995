"""A big split batch: one job per part (any worker parses it), the batch applied once, as one
transaction, with exactly the result of one worker doing it all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import connection, transaction
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from partners.inbound.parts import part_tables
from partners.inbound.processing import inbound_batch_process, inbound_part_stage
from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, LineError, Receipt, StagedPart
from segments.models import ProfileTraits
from tests.partners.inbound.conftest import RECEIPT_FIELDS, World
from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment

PARTS = {
    1: "u1\td_sid=10\nu2\td_sid=11,zz=1\nu9\td_sid=10\nbad line\n",
    2: "u2\td_sid=90\nu1\td_sid=11\n" + "".join(f"x{n}\td_sid=10\n" for n in range(50)),
    3: "u1\t10:0\nu2\td_unsid=11\nu1 no tab\n",  # later parts win: removals
    4: "u2\td_sid=10\n\nu1\td_sid=10,d_sid=11\n",  # and a later realization again
}


def _write(folder: Path, stamp: int) -> list[Path]:
    paths = []
    for number, text in PARTS.items():
        path = folder / f"ftp_dpm_21_{stamp}.sync.{number}"
        path.write_text(text)
        paths.append(path)
    return paths


def _outcome(receipt: Receipt) -> dict[str, Any]:
    """What a batch did: every counter, every rejected line, every profile's traits."""
    return {
        "counters": {name: getattr(receipt, name) for name in RECEIPT_FIELDS},
        "errors": sorted(
            (e.file_name[-1], e.line_number, e.kind, e.reason)
            for e in LineError.objects.filter(batch=receipt.batch)
        ),
        "traits": sorted(
            (row.profile_id, row.data_source_id, tuple(sorted(row.realized)))
            for row in ProfileTraits.objects.all()
        ),
    }


def _forget_traits() -> None:
    """Back to the world before any batch (mappings and profiles stay)."""
    ProfileTraits.objects.all().delete()


def _single_worker_outcome(tmp_path: Path) -> dict[str, Any]:
    batch = inbound_files_register(paths=_write(tmp_path, 1700000000)).batches[0]
    outcome = _outcome(inbound_batch_process(batch_id=batch.pk))
    _forget_traits()
    return outcome


def test_parts_staged_ahead_give_the_single_job_result(world: World, tmp_path: Path) -> None:
    expected = _single_worker_outcome(tmp_path)
    assert expected["counters"]["format_errors"] == 2  # the example is not trivial
    batch = inbound_files_register(paths=_write(tmp_path, 1700000001)).batches[0]
    files = list(batch.files.order_by("split"))
    for file in reversed(files):  # in any order
        part = inbound_part_stage(file_id=file.pk)
        assert part is not None
    assert inbound_part_stage(file_id=files[0].pk) == StagedPart.objects.get(file=files[0])
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.PROCESSING
    assert _outcome(inbound_batch_process(batch_id=batch.pk)) == expected
    # The part tables went with the batch's commit.
    assert not StagedPart.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [part_tables(files[0].pk)[0]])
        assert cursor.fetchone() == (None,)


def test_a_part_table_emptied_by_a_crash_is_parsed_again(world: World, tmp_path: Path) -> None:
    expected = _single_worker_outcome(tmp_path)
    batch = inbound_files_register(paths=_write(tmp_path, 1700000001)).batches[0]
    files = list(batch.files.order_by("split"))
    for file in files:
        inbound_part_stage(file_id=file.pk)
    with connection.cursor() as cursor:  # what PostgreSQL does to unlogged tables in a crash
        cursor.execute(f"TRUNCATE {part_tables(files[1].pk)[0]}")
    assert _outcome(inbound_batch_process(batch_id=batch.pk)) == expected


def _start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "inbound", "--burst"],
        env={**worker_environment(), "INBOUND_PART_JOBS_MIN_BYTES": "0"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.django_db(transaction=True)
def test_two_real_workers_on_a_batch_of_four_parts(tmp_path: Path, settings: Any) -> None:
    World()
    expected = _single_worker_outcome(tmp_path)
    settings.INBOUND_PART_JOBS_MIN_BYTES = 0
    queue = django_rq.get_queue("inbound")
    queue.empty()
    with transaction.atomic():
        batch = inbound_files_register(paths=_write(tmp_path, 1700000001)).batches[0]
        inbound_batch_enqueue(batch=batch)
    queue_ids = queue.job_ids
    assert len(queue_ids) == 4  # the parts; the batch job waits for them (deferred)
    workers = [_start_worker() for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()[-2000:]
    if InboundBatch.objects.get(pk=batch.pk).status != InboundBatch.Status.PROCESSED:
        # The batch job was released by the last part; a worker may have left before it.
        last = _start_worker()
        last.communicate(timeout=120)
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.PROCESSED
    assert _outcome(batch.receipt) == expected
    assert not StagedPart.objects.exists()
    assert os.environ.get("INBOUND_PART_JOBS_MIN_BYTES") is None  # the test's own env untouched
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    finished = FinishedJobRegistry(queue=queue).get_job_ids()
    assert {*queue_ids, f"inbound-batch-{batch.pk}"} <= set(finished)
