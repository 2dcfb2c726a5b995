"""Each data source's batches take turns: one batch of a data source in the queue at a time,
applied in the order they came; a worker never waits on another batch's lock; ID sync never
waits for a batch; a quiet partner's file is not held behind another partner's backlog."""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import django_rq
import psycopg
import pytest
from django.db import connection
from rq import SimpleWorker

from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_batch_enqueue, inbound_turn_dispatch
from partners.inbound.registration import inbound_files_register
from partners.locks import INBOUND_TURN_LOCK
from partners.models import InboundBatch
from tests.conftest import queue_wipe
from tests.factories import (
    DataSourceFactory,
    IDMappingFactory,
    PartnerFactory,
    TraitFactory,
    random_uuid,
)
from tests.partners.inbound.conftest import World
from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment
from tests.test_production_web import Gunicorn

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def inbound_queue() -> Any:
    return queue_wipe(django_rq.get_queue("inbound"))


def _file(folder: Path, dpid: int, stamp: int, lines: list[str]) -> Path:
    path = folder / f"ftp_dpm_{dpid}_{stamp}.sync"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _big_file(folder: Path, dpid: int, stamp: int, lines: int, sid: int) -> Path:
    path = folder / f"ftp_dpm_{dpid}_{stamp}.sync"
    with path.open("w") as out:
        for i in range(lines):
            out.write(f"{10**37 + i}\td_sid={sid},color=red\n")
    return path


def _other_connection() -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"],
        dbname=db["NAME"],
        autocommit=True,
    )


def test_a_partner_has_one_batch_in_the_queue_and_a_data_sources_batches_apply_in_order(
    world: World, tmp_path: Path, inbound_queue: Any
) -> None:
    other = DataSourceFactory.create(dpid=41, inbound_id_type="uuid")  # another partner's
    TraitFactory.create(sid=50, data_source=other)
    paths = [
        _file(tmp_path, 21, 1700000000, ["u1\td_sid=10"]),
        _file(tmp_path, 21, 1700000100, ["u1\td_unsid=10", "u1\td_sid=11"]),
        _file(tmp_path, 22, 1700000000, ["u1\td_sid=90"]),
        _file(tmp_path, 21, 1700000200, ["u1\td_sid=10"]),
        _file(tmp_path, 41, 1700000000, [f"{random_uuid()}\td_sid=50"]),
    ]
    batches = [inbound_files_register(paths=[path]).batches[0] for path in paths]
    for batch in batches:
        inbound_batch_enqueue(batch=batch)

    # Acme's first batch and the other partner's are in the queue; Acme's others wait.
    assert inbound_queue.job_ids == [
        f"inbound-batch-{batches[0].pk}",
        f"inbound-batch-{batches[4].pk}",
    ]
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)

    assert set(InboundBatch.objects.values_list("status", flat=True)) == {"processed"}
    finished = list(
        InboundBatch.objects.filter(partner=world.partner)
        .order_by("finished_at")
        .values_list("pk", flat=True)
    )
    assert finished == [b.pk for b in batches[:4]]
    assert world.held(world.u1) == {10, 11}  # the order of the files: 10, -10 +11, 10


def test_a_partner_may_have_several_batches_at_once_never_two_of_one_data_source(
    world: World, tmp_path: Path, inbound_queue: Any, settings: Any
) -> None:
    settings.INBOUND_BATCHES_PER_PARTNER = 3
    paths = [
        _file(tmp_path, 21, 1700000000, ["u1\td_sid=10"]),
        _file(tmp_path, 21, 1700000100, ["u1\td_sid=11"]),
        _file(tmp_path, 22, 1700000000, ["u1\td_sid=90"]),
    ]
    batches = [inbound_files_register(paths=[path]).batches[0] for path in paths]
    for batch in batches:
        inbound_batch_enqueue(batch=batch)
    assert inbound_queue.job_ids == [
        f"inbound-batch-{batches[0].pk}",
        f"inbound-batch-{batches[2].pk}",
    ]


def test_a_batch_whose_data_source_is_busy_waits_its_turn_without_holding_the_worker(
    world: World, tmp_path: Path, inbound_queue: Any, settings: Any
) -> None:
    """Another process holds the data source's batch lock (a batch being applied on
    another host): the job gives the worker back at once, RQ tries it again later."""
    settings.INBOUND_TURN_RETRY_INTERVALS = [60]
    batch = inbound_files_register(paths=[_file(tmp_path, 21, 1700000000, ["u1\td_sid=10"])])
    inbound_batch_enqueue(batch=batch.batches[0])
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, 21)", [INBOUND_TURN_LOCK])
        started = time.monotonic()
        SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)
        assert time.monotonic() - started < 10
    job = inbound_queue.fetch_job(f"inbound-batch-{batch.batches[0].pk}")
    assert job.get_status() == "scheduled"  # tried again in a minute, no retry of its own used
    assert job.retries_left == settings.INBOUND_RETRY_MAX
    assert InboundBatch.objects.get(pk=batch.batches[0].pk).status == InboundBatch.Status.QUEUED

    # The batch ahead ends: the waiting job is queued at once, not a minute later.
    inbound_turn_dispatch(partner_id=world.partner.pk)
    assert job.get_status() == "queued"
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)
    assert InboundBatch.objects.get(pk=batch.batches[0].pk).status == "processed"


def test_the_ingest_command_waits_for_the_batch_ahead(world: World, tmp_path: Path) -> None:
    batch = inbound_files_register(paths=[_file(tmp_path, 21, 1700000000, ["u1\td_sid=10"])])
    with _other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s, 21)", [INBOUND_TURN_LOCK])
        threading.Timer(1.0, other.execute, ["SELECT pg_advisory_unlock_all()"]).start()
        started = time.monotonic()
        receipt = inbound_batch_process(batch_id=batch.batches[0].pk, wait=True)
        assert time.monotonic() - started >= 0.9
    assert receipt.stored_records == 1


def _worker(*queues: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", *queues, "--burst"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_id_sync_calls_never_wait_for_a_batch_of_their_data_source(
    tmp_path: Path, inbound_queue: Any
) -> None:
    """While a real worker applies a long batch of data source 31, the ID-sync pool (real
    gunicorn) keeps answering /ibs: for new and known IDs of that data source and others."""
    partner = PartnerFactory.create()
    busy = DataSourceFactory.create(dpid=31, partner=partner, inbound_id_type="uuid")
    quiet = DataSourceFactory.create(dpid=32, partner=partner)
    TraitFactory.create(sid=40, data_source=busy)
    known = [IDMappingFactory.create(data_source=busy, dpuuid=f"k{i}").profile for i in range(5)]
    batch = inbound_files_register(paths=[_big_file(tmp_path, 31, 1700000000, 400_000, 40)])
    inbound_batch_enqueue(batch=batch.batches[0])

    env = {**worker_environment(), "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1"}
    idsync = Gunicorn("portal.wsgi:idsync_application", {**env, "WEB_POOL": "idsync"})
    worker: subprocess.Popen[bytes] | None = None
    try:
        for i in range(8):  # the first calls wait for the workers to boot (seconds)
            assert idsync.get(f"/ibs:dpid=32&dpuuid=warm-{i}", timeout=120)[0] == 200
        # One parse process, so the batch leaves a core to the pool (as one would run them).
        worker = _worker("inbound", env={**env, "INBOUND_PARSE_PROCESSES": "0"})
        deadline = time.monotonic() + 120
        while InboundBatch.objects.get(pk=batch.batches[0].pk).status != "processing":
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never started the batch"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the batch's transaction
        timings: list[float] = []
        for i in range(150):
            if i % 3 == 0:  # a new visitor, a new ID of the busy data source
                path = f"/ibs:dpid=31&dpuuid=new-{i}"
                cookie = None
            elif i % 3 == 1:  # a returning visitor, a new ID of the busy data source
                path = f"/ibs:dpid=31&dpuuid=again-{i}"
                cookie = known[i % 5].uuid
            else:  # another data source
                path = f"/ibs:dpid=32&dpuuid=other-{i}"
                cookie = random_uuid()
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", idsync.port, timeout=30)
            conn.request("GET", path, headers={"Cookie": f"dd_uuid={cookie}"} if cookie else {})
            status = conn.getresponse().status
            conn.close()
            timings.append(time.monotonic() - started)
            assert status == 200, (path, status)
        still = InboundBatch.objects.get(pk=batch.batches[0].pk).status
        assert still == "processing", "the batch ended before the calls did: make it longer"
    finally:
        idsync.stop()
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
            # The killed worker's session goes on with its statement until PostgreSQL sees
            # the client gone; ended here, so the test's flush never deadlocks with it.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                )
    p50, p99 = statistics.median(timings), _percentile(timings, 0.99)
    print(
        f"/ibs: during a batch of its data source: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    # The target is p99 under 50 ms (README); the bound here leaves room for a loaded CI
    # machine while still failing a call that waited for the batch (seconds).
    assert max(timings) < 1.5, f"a call waited {max(timings):.1f} s"
    assert p99 < 0.5
    assert quiet.id_mappings.filter(dpuuid__startswith="other-").count() == 50
    assert busy.id_mappings.filter(dpuuid__startswith="new-").count() == 50


def test_a_quiet_partners_file_starts_within_seconds_behind_another_partners_backlog(
    tmp_path: Path, inbound_queue: Any
) -> None:
    """Twelve files of one partner (two of its data sources), then one line of another
    partner: with two real workers, the line starts within seconds, and each data source's
    files apply in their order."""
    partner = PartnerFactory.create()
    busy = [
        DataSourceFactory.create(dpid=dpid, partner=partner, inbound_id_type="uuid")
        for dpid in (31, 32)
    ]
    for sid, source in ((40, busy[0]), (41, busy[1])):
        TraitFactory.create(sid=sid, data_source=source)
    quiet = DataSourceFactory.create(dpid=41, inbound_id_type="uuid")
    TraitFactory.create(sid=50, data_source=quiet)
    backlog = []
    for n in range(12):
        dpid, sid = (31, 40) if n % 2 else (32, 41)
        path = _big_file(tmp_path, dpid, 1700000000 + n, 40_000, sid)
        backlog.append(inbound_files_register(paths=[path]).batches[0])
        inbound_batch_enqueue(batch=backlog[-1])
    line = _file(tmp_path, 41, 1700000000, [f"{random_uuid()}\td_sid=50"])
    small = inbound_files_register(paths=[line]).batches[0]
    inbound_batch_enqueue(batch=small)

    env = {**worker_environment(), "INBOUND_PARSE_PROCESSES": "0"}
    workers = [_worker("inbound", env=env) for _ in range(2)]
    try:
        deadline = time.monotonic() + 180
        while InboundBatch.objects.get(pk=small.pk).status != "processed":
            assert time.monotonic() < deadline, "the small file was never processed"
            time.sleep(0.1)
        small.refresh_from_db()
        assert small.started_at is not None
        waited = (small.started_at - small.created_at).total_seconds()
        ahead = InboundBatch.objects.filter(pk__in=[b.pk for b in backlog], status="processed")
        print(
            f"one line behind a backlog of 12 files: started after {waited:.1f} s,"
            f" {ahead.count()} of the backlog's files processed by then"
        )
        assert waited < 15
        assert ahead.count() < 10  # it did not wait for the backlog
        for worker in workers:
            assert worker.wait(timeout=300) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
    for dpid in (31, 32):
        order = InboundBatch.objects.filter(target_id=dpid).order_by("finished_at")
        assert list(order.values_list("pk", flat=True)) == [
            b.pk for b in backlog if b.target_id == dpid
        ]
    assert set(InboundBatch.objects.values_list("status", flat=True)) == {"processed"}


def test_a_partner_sending_to_a_shared_data_source_waits_one_batch_not_the_owners_backlog(
    tmp_path: Path, inbound_queue: Any
) -> None:
    """The owner of a data source has eight files of it in line, then a partner it is shared
    with sends one line for it: with two real workers, the guest's line goes after the owner's
    batch being applied, not after the whole backlog (the data source's batches alternate
    between its partners), and the owner's files still apply in their order."""
    owner = PartnerFactory.create()
    guest = PartnerFactory.create()
    shared = DataSourceFactory.create(dpid=31, partner=owner, inbound_id_type="uuid")
    shared.shared_with.add(guest)
    TraitFactory.create(sid=40, data_source=shared)
    backlog = []
    for n in range(8):
        path = _big_file(tmp_path, 31, 1700000000 + n, 40_000, 40)
        backlog.append(inbound_files_register(paths=[path]).batches[0])
        inbound_batch_enqueue(batch=backlog[-1])
    line = _file(tmp_path, 31, 1700000100, [f"{random_uuid()}\td_sid=40"])
    guest_batch = inbound_files_register(paths=[line], partner=guest).batches[0]
    assert guest_batch.partner_id == guest.pk
    inbound_batch_enqueue(batch=guest_batch)

    # A retry interval far longer than the backlog: the guest's batch must be queued by the
    # batch ahead of it ending, not by RQ trying it again.
    env = {
        **worker_environment(),
        "INBOUND_PARSE_PROCESSES": "0",
        "INBOUND_TURN_RETRY_INTERVALS": "120",
    }
    workers = [_worker("inbound", env=env) for _ in range(2)]
    try:
        for worker in workers:  # burst workers: they stop once nothing is queued
            assert worker.wait(timeout=240) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
    guest_batch.refresh_from_db()
    assert guest_batch.status == "processed", "the guest's batch waited for an RQ retry"
    ahead = InboundBatch.objects.filter(
        pk__in=[b.pk for b in backlog], finished_at__lte=guest_batch.started_at
    ).count()
    print(f"a guest's line on a shared data source: after {ahead} of the owner's 8 files")
    assert ahead <= 1
    order = InboundBatch.objects.filter(partner=owner).order_by("finished_at")
    assert list(order.values_list("pk", flat=True)) == [b.pk for b in backlog]
    assert set(InboundBatch.objects.values_list("status", flat=True)) == {"processed"}


def test_a_data_source_shared_by_three_partners_takes_one_batch_of_each_in_turn(
    tmp_path: Path, inbound_queue: Any, settings: Any
) -> None:
    """The owner and two guests, four, four and two files for one data source, sent in
    that order: each partner's next batch waits one batch of each other partner, never
    another's whole backlog (before: the second guest's files went last, after all eight
    of the others, ABABABABCC, since the partner whose queued batch is oldest always went
    next)."""
    settings.INBOUND_TURN_RETRY_INTERVALS = [600]  # queued by the turns, not by a retry
    owner, guest, third = (PartnerFactory.create() for _ in range(3))
    shared = DataSourceFactory.create(dpid=31, partner=owner, inbound_id_type="uuid")
    shared.shared_with.add(guest, third)
    TraitFactory.create(sid=40, data_source=shared)
    letters = {owner.pk: "A", guest.pk: "B", third.pk: "C"}
    for n, partner in enumerate([owner] * 4 + [guest] * 4 + [third] * 2):
        path = _file(tmp_path, 31, 1700000000 + n, [f"{random_uuid()}\td_sid=40"])
        inbound_batch_enqueue(
            batch=inbound_files_register(paths=[path], partner=partner).batches[0]
        )
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)
    finished = InboundBatch.objects.order_by("finished_at").values_list("partner_id", "status")
    assert [status for _, status in finished] == ["processed"] * 10
    assert "".join(letters[partner_id] for partner_id, _ in finished) == "ABCABCABAB"


def test_a_guests_batch_queued_before_the_data_source_stops_being_shared_is_refused(
    tmp_path: Path, inbound_queue: Any
) -> None:
    """Staff stop sharing a data source while a guest's file waits in line: the file is
    refused with the words of a refused upload, the owner's still applies (before: the
    guest's batch wrote into the owner's data source all the same)."""
    owner, guest = PartnerFactory.create(), PartnerFactory.create()
    shared = DataSourceFactory.create(dpid=31, partner=owner, inbound_id_type="uuid")
    shared.shared_with.add(guest)
    TraitFactory.create(sid=40, data_source=shared)
    owners = inbound_files_register(
        paths=[_file(tmp_path, 31, 1700000000, [f"{random_uuid()}\td_sid=40"])]
    ).batches[0]
    guests = inbound_files_register(
        paths=[_file(tmp_path, 31, 1700000001, [f"{random_uuid()}\td_sid=40"])], partner=guest
    ).batches[0]
    shared.shared_with.remove(guest)
    for batch in (owners, guests):
        inbound_batch_enqueue(batch=batch)
    SimpleWorker([inbound_queue], connection=inbound_queue.connection).work(burst=True)

    owners.refresh_from_db()
    guests.refresh_from_db()
    assert owners.status == "processed"
    assert guests.status == "failed"
    assert guests.error == "data source 31 belongs to another partner"
    assert guests.receipt.stored_records == 0
    assert guests.files.get().status == "failed"
