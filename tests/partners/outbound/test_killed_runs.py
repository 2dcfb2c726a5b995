"""A run whose worker dies while writing the ``.info`` control file leaves no temporary file
for good: a real RQ worker, killed with SIGKILL (it and its work horse) while a real SFTP
server holds the ``.info``'s write, then the next run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from partners.models import Destination, OutboundRun
from tests.factories import SftpChannelFactory
from tests.partners.dropzones.conftest import ChrootSFTP, sftp_serving
from tests.partners.inbound.conftest import Deliver, World
from tests.partners.outbound.test_runs import _check_info, _destination


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_while_writing_the_info_leaves_no_partial_file(
    deliver: Deliver, tmp_path: Path, settings: Any
) -> None:
    """Before: the next run deleted the killed run's data files' ``.partial`` names only;
    ``<name>.info.partial`` stayed in the partner's folder for good."""
    import django_rq
    import psutil

    from partners.outbound.jobs import outbound_run_job
    from partners.outbound.runs import OutboundRunInProgress, outbound_run
    from tests.partners.inbound.test_jobs import BASE_DIR, worker_environment

    held, released = threading.Event(), threading.Event()

    class InfoWriteHeld(ChrootSFTP):
        """Holds the first write of a ``.info.partial`` (after writing it) until released:
        the moment the worker is inside the ``.info``'s delivery, made deterministic."""

        async def write(self, file_obj: Any, offset: int, data: bytes) -> int:
            written = cast(int, super().write(file_obj, offset, data))  # asyncssh's: no await
            if os.fsdecode(file_obj.name).endswith(".info.partial") and not held.is_set():
                file_obj.flush()
                held.set()
                while not released.is_set():
                    await asyncio.sleep(0.02)
            return written

    world = World()
    destination = _destination(world, tmp_path / "unused")
    served = tmp_path / "served"
    (served / "drop").mkdir(parents=True)
    settings.S2S_CREDENTIALS_HELD_SFTP = "secret"
    settings.SFTP_KNOWN_HOST_FILE = str(tmp_path / "known_hosts")
    with sftp_serving(served, InfoWriteHeld) as server:
        destination.channel = SftpChannelFactory.create(
            partner=world.partner,
            port=server.port,
            prefix="/drop",
            credentials_ref="S2S_CREDENTIALS_HELD_SFTP",
        )
        destination.save()
        deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\nu2\td_sid=11\n"})
        queue = django_rq.get_queue("outbound")
        queue.empty()
        queue.enqueue(outbound_run_job, destination.pk)
        worker = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "rqworker", "outbound", "--burst"],
            env={
                **worker_environment(),
                "S2S_CREDENTIALS_HELD_SFTP": "secret",
                "SFTP_KNOWN_HOST_FILE": str(tmp_path / "known_hosts.worker"),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert held.wait(timeout=120), "the worker never wrote the .info"
            for process in [*psutil.Process(worker.pid).children(recursive=True), worker]:
                os.kill(process.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            released.set()
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)

        folder = served / "drop" / "acme" / "outbound"
        killed = destination.runs.get()
        assert killed.status == OutboundRun.Status.RUNNING  # killed before it could say
        [data] = killed.files.values_list("name", flat=True)  # delivered whole before
        stem = data.split(".", 1)[0]
        assert sorted(os.listdir(folder)) == sorted([data, f"{stem}.info.partial"])

        deadline = time.monotonic() + 10
        while True:  # PostgreSQL lets go of the dead worker's lock as it sees the hang-up
            try:
                retry = outbound_run(destination=Destination.objects.get(pk=destination.pk))
                break
            except OutboundRunInProgress:
                assert time.monotonic() < deadline
                time.sleep(0.05)

    killed.refresh_from_db()
    assert (killed.status, killed.error) == (
        OutboundRun.Status.FAILED,
        "interrupted: the run stopped before it ended (its worker stopped, or lost the database)",
    )
    names = sorted(os.listdir(folder))
    assert [name for name in names if name.endswith(".partial")] == []
    # The killed run's data file stays (it was whole; no .info names it); the retry's set
    # is whole, its .info last.
    assert names == sorted([data, *retry.files.values_list("name", flat=True), retry.info_name])
    files = {name: (folder / name).read_bytes() for name in names if name != data}
    assert _check_info(files)["Totals"]["TotalNumberLines"] == 2
