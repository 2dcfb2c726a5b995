"""A batch tells how far it is while it runs: on its RQ job, read by the portal."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from rq import SimpleWorker
from rq.job import Job

from partners.inbound import stage
from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_batch_enqueue, inbound_batch_job_id
from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import inbound_queue  # noqa: F401 - a fixture
from tests.partners.portal.test_pages import _login


def _big_file(tmp_path: Path) -> Path:
    path = tmp_path / "ftp_dpm_21_1700000000.sync.gz"
    lines = "".join(f"user{n}\td_sid=10\n" for n in range(60_000)).encode()
    path.write_bytes(gzip.compress(lines))
    return path


def test_the_service_tells_its_progress_up_to_the_end(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage, "PROGRESS_EVERY_SECONDS", 0.0)  # every block, not every second
    batch = inbound_files_register(paths=[_big_file(tmp_path)]).batches[0]
    heard: list[int] = []
    inbound_batch_process(batch_id=batch.pk, progress=heard.append)
    staged, applied = heard[:-2], heard[-2:]
    assert staged, "reading the file reports its progress"
    assert staged == sorted(staged)
    assert all(0 <= p <= stage.STAGED_PERCENT for p in staged)
    assert applied == [90, 95]


@pytest.mark.django_db(transaction=True)
def test_the_job_keeps_its_progress_in_rq(
    tmp_path: Path,
    inbound_queue: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    World()
    monkeypatch.setattr(stage, "PROGRESS_EVERY_SECONDS", 0.0)
    with transaction.atomic():
        batch = inbound_files_register(paths=[_big_file(tmp_path)]).batches[0]
        inbound_batch_enqueue(batch=batch)
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)
    job = Job.fetch(inbound_batch_job_id(batch.pk), connection=inbound_queue.connection)
    assert job.meta["progress"] == 95
    batch.refresh_from_db()
    assert batch.status == InboundBatch.Status.PROCESSED


def test_my_files_shows_a_running_batch_percent_done(
    world: World,
    tmp_path: Path,
    inbound_queue: Any,  # noqa: F811
) -> None:
    batch = inbound_files_register(paths=[_big_file(tmp_path)], partner=world.partner).batches[0]
    InboundBatch.objects.filter(pk=batch.pk).update(status=InboundBatch.Status.PROCESSING)
    job = Job.create(
        "partners.inbound.jobs.inbound_batch_process_job",
        args=(batch.pk,),
        id=inbound_batch_job_id(batch.pk),
        connection=inbound_queue.connection,
    )
    job.meta["progress"] = 42
    job.save()
    client = _login(world.partner, "acme")
    [row] = client.get("/portal/files/status.json").json()["files"]
    assert (row["status"], row["status_label"], row["progress"]) == (
        "processing",
        "Processing · 42 %",
        42,
    )
    page = client.get("/portal/files/").content.decode()
    assert 'value="42"' in page
    job.delete()


def test_my_files_says_which_parts_a_waiting_batch_has(world: World, tmp_path: Path) -> None:
    for number in (1, 3):
        part = tmp_path / f"ftp_dpm_21_1700000000.sync.{number}"
        part.write_text("u1\td_sid=10\n")
        inbound_files_register(paths=[part], partner=world.partner, complete=False)
    client = _login(world.partner, "acme")
    rows = client.get("/portal/files/status.json").json()["files"]
    assert {(r["status_label"], r["status_detail"]) for r in rows} == {
        ("Waiting for other parts", "parts 1-3 here, missing 2")
    }
