"""Split parts arriving one by one (SPEC §3.6): one waiting batch, released when complete or
when the wait runs out (the receipt then names the missing parts)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import connection
from django.utils import timezone

from partners.inbound.names import parts_missing
from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_waiting_batches_release
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch, InboundFile
from partners.receipts.render import receipt_text
from tests.partners.inbound.conftest import World

NAME = "ftp_dpm_21_1700000000.sync"


@pytest.mark.parametrize(
    ("parts", "missing"),
    [([0, 1, 2], []), ([1, 2, 3], []), ([1, 3], [2]), ([3], [1, 2]), ([0, 3], [1, 2]), ([], [])],
)
def test_parts_missing(parts: list[int], missing: list[int]) -> None:
    assert parts_missing(parts) == missing


def _part(tmp_path: Path, number: int, text: str = "u1\td_sid=10\n") -> Path:
    path = tmp_path / f"{NAME}.{number}"
    path.write_text(text)
    return path


def _arrive(tmp_path: Path, number: int, text: str = "u1\td_sid=10\n") -> InboundBatch:
    registration = inbound_files_register(paths=[_part(tmp_path, number, text)], complete=False)
    assert registration.batches == []
    [batch] = registration.waiting
    return batch


def _settings(settings: Any) -> None:
    settings.INBOUND_PARTS_SETTLE_SECONDS = 300
    settings.INBOUND_PARTS_MAX_WAIT_SECONDS = 3600


def test_parts_arriving_apart_wait_in_one_batch_until_no_part_came_for_a_while(
    world: World, tmp_path: Path, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _settings(settings)
    first = _arrive(tmp_path, 1)
    second = _arrive(tmp_path, 2, "u2\td_sid=11\n")
    assert first.pk == second.pk
    assert first.status == InboundBatch.Status.WAITING
    last = InboundFile.objects.latest("received_at").received_at

    assert inbound_waiting_batches_release(now=last + timedelta(seconds=299)) == []
    queue = django_rq.get_queue("inbound")
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        released = inbound_waiting_batches_release(now=last + timedelta(seconds=300))
    assert [b.pk for b in released] == [first.pk]
    first.refresh_from_db()
    assert (first.status, first.missing_parts) == (InboundBatch.Status.QUEUED, "")
    assert queue.job_ids == [f"inbound-batch-{first.pk}"]

    receipt = inbound_batch_process(batch_id=first.pk)
    assert receipt.records_received == 2
    assert world.held(world.u1) == {10}
    assert world.held(world.u2) == {11}


def test_a_part_that_never_arrives_the_batch_goes_after_the_longest_wait(
    world: World, tmp_path: Path, settings: Any, mailoutbox: Any
) -> None:
    _settings(settings)
    batch = _arrive(tmp_path, 1)
    _arrive(tmp_path, 3)
    created = InboundBatch.objects.get(pk=batch.pk).created_at
    # Quiet for long enough, but part 2 is missing: it keeps waiting...
    assert inbound_waiting_batches_release(now=created + timedelta(seconds=3599)) == []
    # ...until the longest wait is over; then it goes with what it has.
    [released] = inbound_waiting_batches_release(now=created + timedelta(seconds=3600))
    assert released.missing_parts == "2"
    receipt = inbound_batch_process(batch_id=batch.pk)
    assert receipt.records_received == 2
    assert "Missing parts (not received in time; processed without them): 2" in receipt_text(
        receipt
    )


def test_a_part_after_the_batch_went_starts_a_new_batch(
    world: World, tmp_path: Path, settings: Any
) -> None:
    _settings(settings)
    batch = _arrive(tmp_path, 1)
    inbound_waiting_batches_release(now=timezone.now() + timedelta(hours=1))
    late = _arrive(tmp_path, 2)
    assert late.pk != batch.pk
    assert late.status == InboundBatch.Status.WAITING


def test_the_ingest_command_path_takes_all_parts_as_complete(world: World, tmp_path: Path) -> None:
    registration = inbound_files_register(paths=[_part(tmp_path, 1), _part(tmp_path, 2)])
    [batch] = registration.batches
    assert batch.status == InboundBatch.Status.QUEUED
    assert registration.waiting == []


@pytest.mark.django_db(transaction=True)
def test_parts_registered_at_the_same_moment_join_one_batch(tmp_path: Path) -> None:
    World()
    paths = [_part(tmp_path, number) for number in range(1, 7)]
    barrier = threading.Barrier(len(paths))
    errors: list[BaseException] = []

    def arrive(path: Path) -> None:
        try:
            barrier.wait()
            inbound_files_register(paths=[path], complete=False)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=arrive, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    [batch] = InboundBatch.objects.all()
    assert sorted(s or 0 for s in batch.files.values_list("split", flat=True)) == [1, 2, 3, 4, 5, 6]
