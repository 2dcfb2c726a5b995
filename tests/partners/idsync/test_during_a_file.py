"""ID sync never waits for an ID-sync file (issue 22): a real RQ worker applies a big
``adobe_id_`` file of data source 21 while the ID-sync pool (real gunicorn) answers calls
that write the very rows the file is writing (the profile of a UUID the file brings, a
mapping the file creates or refreshes), and calls that do not.

Before, such a call's INSERT waited in PostgreSQL for the file's transaction to end (on the
file's uncommitted entry in the unique index of segments_profile.uuid or of the mapping, or
on the mapping row the file refreshed): seconds to minutes, then gunicorn's timeout, a 500."""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django_rq
import psycopg
import pytest
from django.conf import settings

from partners.idsync.cookies import signed_value
from partners.inbound.queueing import inbound_batch_enqueue
from partners.inbound.registration import inbound_files_register
from partners.models import IDMapping, InboundBatch
from tests.conftest import queue_wipe
from tests.factories import DataSourceFactory, PartnerFactory
from tests.partners.inbound.test_jobs import start_worker, worker_environment
from tests.test_production_web import Gunicorn

pytestmark = pytest.mark.django_db(transaction=True)

KNOWN = 20_000  # visitors with a mapping the file refreshes
NEW = 150_000  # UUIDs the file brings: a profile and a mapping each


def known_uuid(i: int) -> str:
    return "1" + str(i).zfill(37)


def new_uuid(i: int) -> str:
    return "2" + str(i).zfill(37)


@pytest.fixture
def inbound_queue() -> Any:
    return queue_wipe(django_rq.get_queue("inbound"))


@pytest.fixture
def database_url() -> str:
    return worker_environment()["DATABASE_URL"]


@pytest.fixture
def known_visitors(database_url: str) -> None:
    """KNOWN profiles, each mapped to v<i> in data source 21, last seen two hours ago (so a
    call of theirs refreshes it)."""
    partner = PartnerFactory.create()
    DataSourceFactory.create(dpid=21, partner=partner)
    DataSourceFactory.create(dpid=22, partner=partner)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO segments_profile (uuid, created_at)"
            " SELECT '1' || lpad(g::text, 37, '0'), now() FROM generate_series(1, %s) g",
            [KNOWN],
        )
        conn.execute(
            "INSERT INTO partners_idmapping (data_source_id, dpuuid, profile_id,"
            " first_seen_at, last_seen_at)"
            " SELECT 21, 'v' || ltrim(substr(uuid, 2), '0'), id, now() - interval '2 hours',"
            " now() - interval '2 hours' FROM segments_profile"
        )
        conn.execute("ANALYZE segments_profile, partners_idmapping")


def _id_sync_file(folder: Path) -> Path:
    path = folder / "adobe_id_0_21_1700000000.sync"
    with path.open("w") as out:
        for i in range(1, KNOWN + 1):
            out.write(f"{known_uuid(i)}\tv{i}\n")
        for i in range(1, NEW + 1):
            out.write(f"{new_uuid(i)}\tf{i}\n")
    return path


@pytest.fixture
def holds_profile(database_url: str) -> Iterator[Callable[[str], bool]]:
    """Whether another transaction (the file's) is writing the profile of a UUID: an insert
    of it waits (here at most 200 ms, then rolled back)."""
    conn = psycopg.connect(database_url)

    def holds(uuid: str) -> bool:
        try:
            # SET LOCAL: on Citus it holds on the workers too, where the row is locked.
            conn.execute("SET LOCAL lock_timeout = '200ms'")
            conn.execute(
                "INSERT INTO segments_profile (uuid, created_at) VALUES (%s, now())"
                " ON CONFLICT (uuid) DO NOTHING",
                [uuid],
            )
            return False
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            conn.rollback()

    yield holds
    conn.close()


def _get(port: int, target: str, cookie: str | None) -> tuple[int | str, float]:
    headers = {"Cookie": f"dd_uuid={cookie}"} if cookie else {}
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", target, headers=headers)
        status: int | str = conn.getresponse().status
        conn.close()
    except OSError as exc:  # a worker killed by gunicorn's timeout
        status = type(exc).__name__
    return status, time.monotonic() - started


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_id_sync_calls_writing_the_rows_of_a_file_being_applied_answer_at_once(
    known_visitors: None,
    tmp_path: Path,
    inbound_queue: Any,
    holds_profile: Callable[[str], bool],
) -> None:
    batch = inbound_files_register(paths=[_id_sync_file(tmp_path)]).batches[0]
    inbound_batch_enqueue(batch=batch)
    env = {
        **worker_environment(),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "IDSYNC_NEW_PER_ADDRESS": "1000000/10m",
        "SECRET_KEY": settings.SECRET_KEY,  # the pool verifies the cookies signed here
    }
    idsync = Gunicorn(
        "portal.wsgi:idsync_application", {**env, "WEB_POOL": "idsync", "WEB_WORKERS": "2"}
    )
    worker: subprocess.Popen[bytes] | None = None
    timings: dict[str, list[float]] = {}
    statuses: dict[str, dict[int | str, int]] = {}
    rounds_while_held = 0
    try:
        for i in range(6):  # the first calls wait for the workers to boot
            assert idsync.get(f"/ibs:dpid=22&dpuuid=warm-{i}", timeout=120)[0] == 200
        # One parse process, so the batch leaves a core to the pool.
        worker = start_worker(env={**env, "INBOUND_PARSE_PROCESSES": "0"})
        deadline = time.monotonic() + 300
        n = 0
        while InboundBatch.objects.get(pk=batch.pk).status != InboundBatch.Status.PROCESSED:
            assert worker.poll() is None or worker.returncode == 0, (
                worker.stderr.read() if worker.stderr else ""
            )
            assert time.monotonic() < deadline, "the batch did not end"
            n += 1
            k, j = n % KNOWN + 1, (n * 7919) % NEW + 1
            calls = {
                # the profile the file is making, and the file's own mapping for it
                "the file's visitor, the file's ID": (f"/ibs:dpid=21&dpuuid=f{j}", new_uuid(j)),
                "the file's visitor, another ID": (f"/ibs:dpid=21&dpuuid=g{n}", new_uuid(j)),
                # a mapping the file refreshes (its row locked by the file)
                "known visitor, refreshing": (f"/ibs:dpid=21&dpuuid=v{k}", known_uuid(k)),
                "known visitor, a new ID": (f"/ibs:dpid=21&dpuuid=k{n}", known_uuid(k)),
                "new visitor": (f"/ibs:dpid=21&dpuuid=n{n}", None),
                "new visitor, another data source": (f"/ibs:dpid=22&dpuuid=o{n}", None),
                "known visitor opting out": (
                    f"/optout?d_cid=21%01v{KNOWN + 1 - k}",
                    known_uuid(KNOWN + 1 - k),
                ),
            }
            for kind, (target, uuid) in calls.items():
                status, took = _get(idsync.port, target, signed_value(uuid) if uuid else None)
                timings.setdefault(kind, []).append(took)
                statuses.setdefault(kind, {}).setdefault(status, 0)
                statuses[kind][status] += 1
            if holds_profile(new_uuid(j)):
                rounds_while_held += 1
    finally:
        idsync.stop()
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)

    every = [t for values in timings.values() for t in values]
    for kind, values in timings.items():
        print(
            f"{kind}: {len(values)} calls, p50 {statistics.median(values) * 1000:.1f} ms,"
            f" p99 {_percentile(values, 0.99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms,"
            f" {statuses[kind]}"
        )
    print(
        f"/ibs: and /optout during the file ({rounds_while_held} rounds while it held"
        f" profiles): p50 {statistics.median(every) * 1000:.1f} ms,"
        f" p99 {_percentile(every, 0.99) * 1000:.1f} ms"
    )
    # The target is p99 under 50 ms (README); the bounds here leave room for a loaded
    # machine while failing any call that waited for the file (seconds).
    assert max(every) < 1.0, f"a call waited {max(every):.1f} s"
    assert _percentile(every, 0.99) < 0.5
    assert rounds_while_held >= 3, "the calls missed the file's transaction: make it longer"
    for kind, seen in statuses.items():
        # An opt-out whose mapping the file holds is not dropped: 503 "try again".
        allowed = {200, 503} if kind == "known visitor opting out" else {200}
        assert set(seen) <= allowed, (kind, seen)

    # The file is whole, and the calls that did not meet its rows were all written.
    receipt = InboundBatch.objects.get(pk=batch.pk).receipt
    assert (receipt.records_received, receipt.rejected) == (KNOWN + NEW, 0)
    assert IDMapping.objects.filter(data_source_id=21, dpuuid__startswith="f").count() == NEW
    made = len(timings["new visitor"])
    assert IDMapping.objects.filter(data_source_id=21, dpuuid__startswith="n").count() == made
    assert IDMapping.objects.filter(data_source_id=22, dpuuid__startswith="o").count() == made
    assert IDMapping.objects.filter(data_source_id=21, dpuuid__startswith="k").count() == made
