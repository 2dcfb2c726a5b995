"""Split files of many parts (issue 22): each part's upload costs the same, the answer is
about that part (and a summary of its batch), the lists are paged, and what is said of the
parts (here, missing) is bounded whatever the part numbers, the same on every page."""

from __future__ import annotations

import base64
import html
import random
import statistics
import threading
import time
from datetime import datetime, timedelta
from datetime import timezone as timezone_of
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from partners.inbound.names import PARTS_TEXT_MAX_CHARS, PartsSummary
from partners.inbound.processing import inbound_batch_process
from partners.inbound.queueing import inbound_waiting_batches_release
from partners.inbound.registration import inbound_files_register
from partners.inbound.split_parts import split_parts_summaries
from partners.models import InboundBatch, InboundFile
from partners.portal.api import api_token_rotate
from partners.receipts.render import receipt_text
from partners.receipts.services import receipt_email_build
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login

NAME = "ftp_dpm_21_1700000000.sync"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token(world: World, settings: Any, tmp_path: Path) -> str:
    settings.MEDIA_ROOT = tmp_path / "media"
    return api_token_rotate(partner=world.partner, by="test")


def _send(client: Client, token: str, number: int, content: bytes = b"u1\td_sid=10\n") -> Any:
    return client.post(
        "/api/v1/files",
        {"file": SimpleUploadedFile(f"{NAME}.{number}", content)},
        headers=_bearer(token),
    )


def _arrive(tmp_path: Path, world: World, number: int) -> InboundBatch:
    path = tmp_path / f"{NAME}.{number}"
    path.write_text("u1\td_sid=10\n")
    [batch] = inbound_files_register(paths=[path], partner=world.partner, complete=False).waiting
    return batch


# ------------------------------------------------------------------------- the words


@pytest.mark.parametrize(
    ("parts", "text", "missing"),
    [
        ([1], "part 1 here", ""),
        ([0, 1, 2], "parts 0-2 here", ""),
        ([1, 3], "parts 1-3 here, missing 2", "2"),
        ([9999], "part 9999 here, missing 1-9998", "1-9998"),
        ([0], "part 0 here", ""),
        ([0, 9999], "parts 0-9999 here, missing 1-9998", "1-9998"),
        ([*range(1, 17), *range(18, 42), *range(43, 501)], "parts 1-500 here, missing 17, 42", ""),
        (
            list(range(2, 10_000, 2)),  # every odd part missing
            "parts 2-9998 here, missing 1, 3, 5, 7, 9, 11, 13, 15, 17, 19 … and 4,989 more",
            "1, 3, 5, 7, 9, 11, 13, 15, 17, 19 … and 4,989 more",
        ),
    ],
)
def test_what_is_said_of_the_parts_is_bounded(parts: list[int], text: str, missing: str) -> None:
    summary = PartsSummary.of(parts)
    assert summary.text == text
    if missing:
        assert summary.missing_text == missing
    assert len(summary.text) <= PARTS_TEXT_MAX_CHARS


@pytest.mark.django_db
def test_the_database_sums_up_parts_as_the_words_do(world: World) -> None:
    """The summary PostgreSQL makes (pages, uploads, the release) is the one of the numbers
    themselves, on sets of every shape."""
    rng = random.Random(22)
    shapes = [[9999], [0], [0, 9999], [1, 2, 3], list(range(2, 10_000, 2))]
    shapes += [sorted(rng.sample(range(10_000), rng.randint(1, 400))) for _ in range(6)]
    batches = {}
    for index, parts in enumerate(shapes):
        batch = InboundBatch.objects.create(
            key=f"ftp_dpm_21_{1700000000 + index}.sync",
            kind=InboundBatch.Kind.TRAITS,
            partner=world.partner,
            target=world.source,
        )
        InboundFile.objects.bulk_create(
            InboundFile(
                batch=batch,
                partner=world.partner,
                name=f"{batch.key}.{n}",
                split=n,
                path="x",
                size=1,
                sha256=str(n),
            )
            for n in parts + parts[:3]  # a part number twice counts once
        )
        batches[batch.pk] = parts
    summaries = split_parts_summaries(list(batches))
    for batch_id, parts in batches.items():
        assert summaries[batch_id] == PartsSummary.of(parts), parts
        assert len(summaries[batch_id].text) <= PARTS_TEXT_MAX_CHARS


# ------------------------------------------------------------------------- one truth


def test_a_lone_last_part_is_told_in_a_few_words_everywhere(
    world: World, tmp_path: Path, settings: Any
) -> None:
    """A lone ``.9999`` waits, then goes after the longest wait without 9,998 numbers: the
    portal, the API, the receipt page, its e-mail (text and HTML) and the CLI all say the
    same bounded text, made in one place."""
    settings.INBOUND_PARTS_SETTLE_SECONDS = 300
    settings.INBOUND_PARTS_MAX_WAIT_SECONDS = 3600
    settings.MEDIA_ROOT = tmp_path / "media"
    batch = _arrive(tmp_path, world, 9999)
    client = _login(world.partner, "acme")
    [row] = client.get("/portal/files/status.json").json()["files"]
    assert row["status_detail"] == "part 9999 here, missing 1-9998"

    created = InboundBatch.objects.get(pk=batch.pk).created_at
    [released] = inbound_waiting_batches_release(now=created + timedelta(seconds=3600))
    assert released.missing_parts == "1-9998"
    receipt = inbound_batch_process(batch_id=batch.pk)

    said = "Missing parts (not received in time; processed without them): 1-9998"
    assert said in receipt_text(receipt)
    page = html.unescape(client.get(f"/portal/receipts/{receipt.pk}/").content.decode())
    assert said in page
    token = api_token_rotate(partner=world.partner, by="test")
    api = client.get(f"/api/v1/receipts/{receipt.pk}", headers=_bearer(token)).json()
    assert api["missing_parts"] == "1-9998"
    [row] = client.get("/portal/files/status.json").json()["files"]
    assert row["status_detail"] == "processed without missing parts 1-9998"
    for internal in (False, True):
        message = receipt_email_build(receipt, recipients=["a@partner.test"], internal=internal)
        assert said in message.body
        assert said in html.unescape(str(message.alternatives[0][0]))


# ------------------------------------------------------------------------- uploads


def test_uploading_a_part_answers_about_that_part_and_sums_up_its_batch(
    client: Client, token: str
) -> None:
    for number in (1, 2):
        assert _send(client, token, number).status_code == 201
    answer = _send(client, token, 5)
    assert answer.status_code == 201
    body = answer.json()
    [row] = body["files"]  # that part only, not every part of the batch
    assert (row["name"], row["status"]) == (f"{NAME}.5", "waiting")
    assert row["status_detail"] == "parts 1-5 here, missing 3-4"
    assert body["batch"] == {
        "key": NAME,
        "status": "waiting",
        "status_label": "Waiting for other parts",
        "parts_here": 3,
        "lowest_part": 1,
        "highest_part": 5,
        "parts_missing": 2,
        "status_detail": "parts 1-5 here, missing 3-4",
    }


def test_the_same_part_sent_twice_is_kept_once(client: Client, token: str) -> None:
    assert _send(client, token, 1).status_code == 201
    again = _send(client, token, 1)
    assert again.status_code == 201
    [row] = again.json()["files"]
    assert row["status"] == "duplicate"
    assert row["error"] == "this part is already here with the same content"
    assert again.json()["batch"]["parts_here"] == 1
    changed = _send(client, token, 1, b"u2\td_sid=10\n")  # new content: a part of its own
    assert changed.json()["files"][0]["status"] == "waiting"
    batch = InboundBatch.objects.get(status=InboundBatch.Status.WAITING)
    assert batch.files.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_same_part_sent_at_the_same_moment_joins_once(settings: Any, tmp_path: Path) -> None:
    """Eight uploads of one part at once (the partner's client retrying): one joins the batch,
    the others are duplicates (the registration locks the waiting batch)."""
    world = World()
    settings.MEDIA_ROOT = tmp_path / "media"
    token = api_token_rotate(partner=world.partner, by="test")
    barrier = threading.Barrier(8)
    answers: list[int] = []

    def send() -> None:
        barrier.wait()
        answers.append(_send(Client(), token, 7).status_code)
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [201] * 8
    assert InboundBatch.objects.count() == 1
    batch = InboundBatch.objects.get()
    assert batch.files.count() == 1
    assert InboundFile.objects.filter(status=InboundFile.Status.DUPLICATE).count() == 7


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


@pytest.mark.parametrize("parts", [1000])
def test_a_thousand_parts_upload_at_the_same_cost_each(
    client: Client, token: str, world: World, parts: int
) -> None:
    """Each upload reads a bounded amount, whatever the parts before it: the same number of
    queries for the 1,000th part as for the 10th, and about the same time (figures printed;
    the bound is generous, the machine is shared)."""
    spent: list[float] = []
    queries: dict[int, int] = {}
    for number in range(1, parts + 1):
        started = time.perf_counter()
        if number in (10, parts):
            with CaptureQueriesContext(connection) as captured:
                answer = _send(client, token, number)
            queries[number] = len(captured)
        else:
            answer = _send(client, token, number)
        spent.append(time.perf_counter() - started)
        assert answer.status_code == 201, answer.content
    first, last = _median_ms(spent[:100]), _median_ms(spent[-100:])
    portal = _login(world.partner, "acme")
    started = time.perf_counter()
    listing = portal.get("/portal/files/status.json").json()
    page_ms = (time.perf_counter() - started) * 1000
    print(
        f"\n{parts} part uploads through the API: median {first:.1f} ms for the first 100,"
        f" {last:.1f} ms for the last 100 (ratio {last / first:.2f}); total"
        f" {sum(spent):.1f} s; queries for part 10: {queries[10]}, part {parts}:"
        f" {queries[parts]}; My files status.json {page_ms:.1f} ms"
    )
    assert queries[parts] == queries[10]
    assert last < first * 1.5 + 3
    assert len(listing["files"]) == 100
    assert listing["files"][0]["status_detail"] == f"parts 1-{parts} here"
    assert InboundBatch.objects.get().files.count() == parts


# ------------------------------------------------------------------------- paged lists


def _files(world: World, count: int) -> None:
    InboundFile.objects.bulk_create(
        InboundFile(
            partner=world.partner,
            name=f"ftp_dpm_21_{1700000000 + n}.sync",
            path="x",
            size=1,
            sha256=str(n),
            status=InboundFile.Status.REJECTED,
            error="a test row",
        )
        for n in range(count)
    )


def test_my_files_pages_its_rows(world: World) -> None:
    _files(world, 250)
    client = _login(world.partner, "acme")
    first = client.get("/portal/files/").content.decode()
    assert first.count("<tr data-file=") == 100
    assert "Page 1 of 3" in first
    assert 'href="?page=2"' in first
    last = client.get("/portal/files/?page=3").content.decode()
    assert last.count("<tr data-file=") == 50
    for odd in ("-1", "abc", "0", "", "1.5", "9" * 40):
        answer = client.get("/portal/files/", {"page": odd})
        assert answer.status_code == 200, odd
        assert "Page 1 of 3" in answer.content.decode() or "Page 3 of 3" in answer.content.decode()
    assert "Page 3 of 3" in client.get("/portal/files/?page=999999").content.decode()
    status = client.get("/portal/files/status.json?page=2").json()
    assert len(status["files"]) == 100
    assert (status["page"], status["pages"], status["count"]) == (2, 3, 250)
    shown = {row["name"] for page in (1, 2, 3) for row in _page(client, page)}
    assert len(shown) == 250


def _page(client: Client, number: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(f"/portal/files/status.json?page={number}").json()[
        "files"
    ]
    return rows


def test_the_api_pages_files_with_a_cursor(client: Client, token: str, world: World) -> None:
    _files(world, 250)
    seen: list[str] = []
    url: str | None = "/api/v1/files"
    pages = 0
    while url:
        body = client.get(url, headers=_bearer(token)).json()
        seen += [row["name"] for row in body["files"]]
        pages += 1
        if pages == 1:
            assert len(body["files"]) == 100
            _files_later = InboundFile.objects.create(  # arrives at the top meanwhile
                partner=world.partner, name="ftp_dpm_21_1800000000.sync", path="x", size=1
            )
            assert _files_later.pk
        url = body["next"]
        assert url is None or url.startswith("http://testserver/api/v1/files?cursor=")
    assert pages == 3
    assert len(seen) == len(set(seen)) == 250  # none twice, none skipped by the newcomer
    small = client.get("/api/v1/files?limit=7", headers=_bearer(token)).json()
    assert len(small["files"]) == 7
    assert "limit=7" in small["next"]
    for bad in ("cursor=abc", "cursor=%00", "cursor=" + "A" * 5000, "limit=abc", "limit=-1"):
        answer = client.get(f"/api/v1/files?{bad}", headers=_bearer(token))
        assert answer.status_code == 400, bad
        [error] = answer.json()["errors"]
        assert error["field"] in ("cursor", "limit")
    assert len(client.get("/api/v1/files?limit=500", headers=_bearer(token)).json()["files"]) == 251


@pytest.mark.parametrize("limit", ["501", "100000", "0", "9" * 30, "\u0665"])
def test_a_limit_past_a_page_is_refused_not_cut(client: Client, token: str, limit: str) -> None:
    """Before: limit=501 (or 100000) answered a page of 500, silently fewer than asked."""
    answer = client.get("/api/v1/files", {"limit": limit}, headers=_bearer(token))
    assert answer.status_code == 400
    assert answer.json() == {
        "errors": [{"msg": "limit is a number of files, 1 to 500", "field": "limit"}]
    }


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "stamp",
    [
        "9999-12-31T23:59:59-05:00|7",  # past the calendar's end in UTC
        "0001-01-01T00:00:00+05:45|7",  # before its start
        "2024-01-01T00:00:00+99:00|7",
        "2024-01-01T00:00:00+00:00|9223372036854775808",  # past PostgreSQL's largest ID
        "2024-01-01T00:00:00+00:00|\u0667",  # a digit, not an ASCII one
        "2024-01-01T00:00:00|7",  # no offset
        "garbage|7",
    ],
)
def test_an_odd_cursor_is_answered_400_in_the_api_shape(
    client: Client, token: str, world: World, stamp: str
) -> None:
    """Before: a cursor whose time overflowed in UTC, or whose ID was past bigint, reached
    the database and answered 500 (and one that was not a time at all, 400, as now)."""
    _files(world, 3)
    answer = client.get("/api/v1/files", {"cursor": _cursor(stamp)}, headers=_bearer(token))
    assert answer.status_code == 400, answer.content[:300]
    assert answer.json() == {
        "errors": [
            {
                "msg": "this cursor is not one we gave: follow the 'next' link",
                "field": "cursor",
            }
        ]
    }


@pytest.mark.parametrize("offset", ["+05:45", "-09:30", "+00:00:30", "+23:59", "-16:00"])
def test_a_cursor_with_any_offset_pages_on_from_the_same_moment(
    client: Client, token: str, world: World, offset: str
) -> None:
    """The same moment written in another time zone names the same place in the list.
    Before: offsets of 16 hours or more (Python takes up to 24, PostgreSQL less than 16)
    reached the database as they were and answered 500."""
    _files(world, 5)
    first = client.get("/api/v1/files?limit=2", headers=_bearer(token)).json()
    stamp, _, pk = (
        base64.urlsafe_b64decode(first["next"].split("cursor=")[1].split("&")[0] + "==")
        .decode()
        .partition("|")
    )
    hours, _, rest = offset[1:].partition(":")
    minutes, _, seconds = rest.partition(":")
    shift = timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds or 0))
    zone = timezone_of(shift if offset[0] == "+" else -shift)
    moved = datetime.fromisoformat(stamp).astimezone(zone).isoformat()
    answer = client.get(
        "/api/v1/files", {"cursor": _cursor(f"{moved}|{pk}"), "limit": "2"}, headers=_bearer(token)
    )
    assert answer.status_code == 200, answer.content[:300]
    again = client.get(first["next"].removeprefix("http://testserver"), headers=_bearer(token))
    assert answer.json()["files"] == again.json()["files"]
