"""*My files* and ``GET /api/v1/files`` answer from PostgreSQL while Redis is down or silent
(issue 22): a running batch's progress, kept on its RQ job, is then shown as unknown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from partners.inbound.registration import inbound_files_register
from partners.models import InboundBatch
from partners.portal.api import api_token_rotate
from tests.conftest import PrivateRedis
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login


def _running_batch(world: World, tmp_path: Path) -> InboundBatch:
    path = tmp_path / "ftp_dpm_21_1700000000.sync"
    path.write_text("u1\td_sid=10\n")
    batch = inbound_files_register(paths=[path], partner=world.partner).batches[0]
    InboundBatch.objects.filter(pk=batch.pk).update(status=InboundBatch.Status.PROCESSING)
    return batch


def _answers(world: World) -> list[dict[str, Any]]:
    """The running file's row as My files (page and JSON) and the API show it."""
    portal = _login(world.partner, "acme")
    page = portal.get("/portal/files/")
    assert page.status_code == 200
    assert "Processing · progress unknown" in page.content.decode()
    token = api_token_rotate(partner=world.partner, by="test")
    api = Client().get("/api/v1/files", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200
    status = portal.get("/portal/files/status.json")
    assert status.status_code == 200
    return [status.json()["files"][0], api.json()["files"][0]]


def test_my_files_and_the_api_answer_while_redis_is_down(
    world: World, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    _running_batch(world, tmp_path)
    private_redis.stop()
    for row in _answers(world):
        assert (row["status"], row["status_label"], row["progress"]) == (
            "processing",
            "Processing · progress unknown",
            None,
        )
    private_redis.start()  # back, empty: the job and its progress are gone, 0 % until told
    [row] = _login(world.partner, "acme2").get("/portal/files/status.json").json()["files"]
    assert row["status_label"] == "Processing · 0 %"


@pytest.fixture
def silent_redis(settings: Any) -> Iterator[str]:
    """A 'Redis' that takes connections and never answers (a host gone quiet behind a
    firewall, a Redis stuck): every RQ queue points at it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.RQ_QUEUES = {name: {**c, "URL": url} for name, c in settings.RQ_QUEUES.items()}
    yield url
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_my_files_answers_when_redis_stops_answering(
    world: World, silent_redis: str, tmp_path: Path
) -> None:
    """A Redis that never answers costs the page about a second, not a hung request."""
    _running_batch(world, tmp_path)
    portal = _login(world.partner, "acme")
    started = time.perf_counter()
    answer = portal.get("/portal/files/status.json")
    spent = time.perf_counter() - started
    print(f"\nMy files with a silent Redis: {spent:.2f} s")
    assert answer.status_code == 200
    assert answer.json()["files"][0]["status_label"] == "Processing · progress unknown"
    assert spent < 10
