"""A drop zone holds the partner's own files, nothing else: symbolic links (to a file outside,
to another partner's folder, dangling, looping, to a folder), hard links, FIFOs and sockets
are rejected once with a reason and never read, on a local folder (real links), over SFTP (a
real server serving real links) and on S3 (keys that climb out of the folder); an entry that
vanishes while the poller looks is skipped; a file swapped for a link after it was
registered is refused by the worker. The secret the links point at reaches nothing a partner
sees."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db.models.signals import post_save
from django.utils import timezone

from partners.dropzones.services import PollResult, inbound_poll, inbound_purge
from partners.inbound.errors import InboundRejected
from partners.inbound.processing import inbound_batch_process
from partners.models import ChannelObject, InboundBatch, InboundChannel, InboundFile, Receipt
from partners.storage import StorageReadError, channel_storage_alias, stored_file_open
from tests.conftest import s3_client
from tests.factories import DataSourceFactory, PartnerFactory
from tests.partners.dropzones.conftest import DropZone, assert_secret_kept, dropzone_make
from tests.partners.inbound.conftest import World

DAY = "acme/date=2026-11-28"
GOOD = "ftp_dpm_21_1700000000.sync"
SECRET = "hunter2-do-not-leak"
# What a deployment's environment file holds: lines that would come back to the partner as
# rejected lines (the receipt's sample, the error workbook, the e-mails) if they were read.
SECRET_LINES = f"SECRET_KEY={SECRET}\nDATABASE_URL=postgres://s2s:{SECRET}@db/s2s\n".encode()

LINK = "a symbolic link, not a file: put the file itself in the folder"
FOLDER_LINK = "a folder on its way is a symbolic link: put the file itself in a plain folder"
FIFO = "a named pipe (FIFO), not a file: put the file itself in the folder"
SOCKET = "a socket, not a file: put the file itself in the folder"
HARD_LINK = (
    "a hard link (the same file has another name elsewhere): put a copy of the file itself"
    " in the folder"
)
STEPS = "the path has an empty, '.' or '..' step: put the file in its folder under a plain name"


def _poll(zone: DropZone) -> PollResult:
    return inbound_poll(channel=InboundChannel.objects.get(pk=zone.channel.pk))


def _name(number: int) -> str:
    return f"ftp_dpm_21_17000000{number:02d}.sync"


def _socket_at(path: Path) -> None:
    """A Unix socket file at ``path`` (bound under a short name, a socket path is at most
    108 bytes, then moved there)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        bound = os.path.join(short, "s")
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(bound)
        os.rename(bound, path)


def test_only_regular_files_are_taken_from_a_local_channel(
    world: World, request: pytest.FixtureRequest, settings: Any, tmp_path: Path
) -> None:
    """Before: a dangling link made the whole poll fail (os.walk then os.stat), and a link to
    a file the worker can read was registered and read."""
    zone = dropzone_make("local", request, world.partner, settings, tmp_path)
    assert zone.folder is not None
    secret = tmp_path / "deploy.env"
    secret.write_bytes(SECRET_LINES)
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create(slug="bob"))
    zone.put("bob/date=2026-11-28/ftp_dpm_31_1700000000.sync", SECRET_LINES)  # bob's upload
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / _name(9)).write_bytes(SECRET_LINES)
    zone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    day = zone.folder / DAY
    (day / _name(1)).symlink_to(secret)  # a name the poller would take, to a secret
    (day / _name(2)).symlink_to("../../bob/date=2026-11-28/ftp_dpm_31_1700000000.sync")
    (day / _name(3)).symlink_to(tmp_path / "nowhere")  # dangling
    (day / _name(4)).symlink_to(_name(4))  # a loop
    os.mkfifo(day / _name(5))
    _socket_at(day / _name(6))
    os.link(secret, day / _name(7))  # a hard link: a regular file, with another name
    (zone.folder / "acme/date=2026-11-29").symlink_to(outside, target_is_directory=True)
    expected = {
        f"{DAY}/{_name(1)}": LINK,
        f"{DAY}/{_name(2)}": LINK,
        f"{DAY}/{_name(3)}": LINK,
        f"{DAY}/{_name(4)}": LINK,
        f"{DAY}/{_name(5)}": FIFO,
        f"{DAY}/{_name(6)}": SOCKET,
        f"{DAY}/{_name(7)}": HARD_LINK,
        "acme/date=2026-11-29": LINK,
    }

    first = _poll(zone)  # refused at first sight, the good file noted
    assert (first.new, first.unreadable) == (len(expected) + 1, [])
    assert dict(first.rejected) == expected
    second = _poll(zone)
    assert (second.registered, second.rejected, second.unreadable) == ([f"{DAY}/{GOOD}"], [], [])
    again = _poll(zone)  # said once
    assert (again.new, again.registered, again.rejected, again.unreadable) == (0, [], [], [])

    rejected = InboundFile.objects.filter(status=InboundFile.Status.REJECTED)
    assert {f.path: f.error for f in rejected} == expected
    assert not rejected.exclude(sha256="").exists()  # none was read
    [batch] = InboundBatch.objects.all()
    receipt = inbound_batch_process(batch_id=batch.pk)
    assert (receipt.records_received, receipt.stored_records) == (1, 1)
    assert secret.read_bytes() == SECRET_LINES  # untouched
    assert_secret_kept(SECRET)


@contextmanager
def _on_first_object_noted(act: Any) -> Iterator[None]:
    """Run ``act(path)`` once, when the poll notes its first object (ChannelObject saved):
    the moment a client renames or removes files while the poller walks the folder, made
    deterministic (the folder's names are already listed, the next ones not yet looked at).
    The poll takes the listing one object at a time here: it looks up 1,000 listed names at
    once in the history, and the walk of folders this small would be over before the first
    object is noted."""
    from partners.dropzones import services

    done: list[bool] = []

    def noted(sender: Any, instance: ChannelObject, created: bool, **kwargs: Any) -> None:
        if created and not done:
            done.append(True)
            act(instance.path)

    post_save.connect(noted, sender=ChannelObject, weak=False)
    chunk, services._HISTORY_CHUNK = services._HISTORY_CHUNK, 1
    try:
        yield
    finally:
        services._HISTORY_CHUNK = chunk
        post_save.disconnect(noted, sender=ChannelObject)


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)
def test_an_entry_vanishing_while_the_poller_looks_is_skipped(
    dropzone: DropZone, world: World
) -> None:
    """Clients that upload ``x.filepart`` then rename it, or delete a file or a folder, while
    the poller walks the folder: before, the stat of a vanished name failed the whole poll
    (local). Now it is skipped, and shows up again under its new name."""
    assert dropzone.folder is not None
    folder = dropzone.folder
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    for number in (1, 2, 3):
        dropzone.put(f"{DAY}/{_name(number)}.filepart", b"u1\td_sid=10\n")
    dropzone.put(f"acme/date=2026-11-29/{_name(4)}", b"u1\td_sid=10\n")

    def client_renames(first: str) -> None:
        assert first == f"{DAY}/{GOOD}"  # the walk goes in name order
        for number in (1, 2, 3):
            (folder / DAY / f"{_name(number)}.filepart").rename(folder / DAY / _name(number))
        shutil.rmtree(folder / "acme/date=2026-11-29")

    with _on_first_object_noted(client_renames):
        result = _poll(dropzone)
    # Over SFTP a folder's listing comes whole, with each entry's attributes (no stat after):
    # the old names are noted, and are no longer waiting once they are gone.
    listed = 1 if dropzone.channel.kind == InboundChannel.Kind.LOCAL else 4
    assert (result.listed, result.new, result.unreadable, result.rejected) == (
        listed,
        listed,
        [],
        [],
    )
    assert _poll(dropzone).registered == [f"{DAY}/{GOOD}"]
    assert sorted(_poll(dropzone).registered) == [f"{DAY}/{_name(n)}" for n in (1, 2, 3)]
    assert not ChannelObject.objects.filter(path__endswith=".filepart").exists()
    assert not ChannelObject.objects.filter(state=ChannelObject.State.SEEN).exists()


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)
def test_a_file_replaced_by_a_link_between_two_polls_is_rejected_and_never_read(
    dropzone: DropZone, world: World, tmp_path: Path
) -> None:
    assert dropzone.folder is not None
    secret = tmp_path / "deploy.env"
    secret.write_bytes(SECRET_LINES)
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    assert _poll(dropzone).new == 1
    path = dropzone.folder / DAY / GOOD
    path.unlink()
    path.symlink_to(secret)
    second = _poll(dropzone)
    assert (second.registered, second.rejected) == ([], [(f"{DAY}/{GOOD}", LINK)])
    assert _poll(dropzone).registered == []
    seen = ChannelObject.objects.get()  # the same object, now refused (not left waiting)
    assert seen.state == ChannelObject.State.REJECTED
    assert not InboundBatch.objects.exists()
    assert_secret_kept(SECRET)


@pytest.mark.parametrize(
    ("dropzone", "swap"),
    [
        *[("local", swap) for swap in ("file", "folder", "fifo", "hard link")],
        # SFTP v3 gives no link count when a file is opened: hard links are refused from the
        # listing only (and whatever this account reads there, the partner's could read).
        *[("sftp", swap) for swap in ("file", "folder", "fifo")],
    ],
    indirect=["dropzone"],
)
def test_a_file_swapped_for_a_link_after_registration_fails_its_batch_unread(
    dropzone: DropZone, world: World, tmp_path: Path, swap: str
) -> None:
    """Processing happens later, in a worker: it opens the file again and must refuse a link
    there too, whether the file or a folder on its way was swapped (or the file made a FIFO,
    which would hang the worker, or a hard link). Before, the worker read the secret and its
    lines came back in the receipt."""
    assert dropzone.folder is not None
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    _poll(dropzone)
    assert _poll(dropzone).registered == [f"{DAY}/{GOOD}"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / GOOD).write_bytes(SECRET_LINES)
    (dropzone.folder / DAY / GOOD).unlink()
    if swap == "file":
        (dropzone.folder / DAY / GOOD).symlink_to(outside / GOOD)
    elif swap == "folder":
        (dropzone.folder / DAY).rmdir()
        (dropzone.folder / DAY).symlink_to(outside, target_is_directory=True)
    elif swap == "fifo":
        os.mkfifo(dropzone.folder / DAY / GOOD)
    else:
        os.link(outside / GOOD, dropzone.folder / DAY / GOOD)
    said = {"file": LINK, "folder": FOLDER_LINK, "fifo": FIFO, "hard link": HARD_LINK}[swap]

    [batch] = InboundBatch.objects.all()
    reason = f"{GOOD}: {said}"
    with pytest.raises(InboundRejected, match=re.escape(said)):
        inbound_batch_process(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.status, batch.error) == (InboundBatch.Status.FAILED, reason)
    assert InboundFile.objects.get().error == reason
    receipt = Receipt.objects.get()
    assert receipt.records_received == 0
    assert_secret_kept(SECRET)
    # The next poll says what the partner left there, once.
    left = (DAY, LINK) if swap == "folder" else (f"{DAY}/{GOOD}", said.replace(FOLDER_LINK, LINK))
    assert _poll(dropzone).rejected == [left]
    assert _poll(dropzone).rejected == []


def test_links_and_hard_links_on_an_sftp_channel_are_rejected_and_never_read(
    world: World, request: pytest.FixtureRequest, settings: Any, tmp_path: Path
) -> None:
    """The server (like OpenSSH's) lists entries as lstat sees them and follows a link when
    asked to open it; before, links were skipped without a word."""
    zone = dropzone_make("sftp", request, world.partner, settings, tmp_path)
    assert zone.folder is not None
    secret = tmp_path / "deploy.env"  # outside what the server serves
    secret.write_bytes(SECRET_LINES)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / _name(9)).write_bytes(SECRET_LINES)
    zone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    day = zone.folder / DAY
    (day / _name(1)).symlink_to(secret)
    (day / _name(3)).symlink_to(tmp_path / "nowhere")
    os.link(secret, day / _name(7))
    (zone.folder / "acme/date=2026-11-29").symlink_to(outside, target_is_directory=True)
    expected = {
        f"{DAY}/{_name(1)}": LINK,
        f"{DAY}/{_name(3)}": LINK,
        f"{DAY}/{_name(7)}": HARD_LINK,
        "acme/date=2026-11-29": LINK,
    }
    first = _poll(zone)
    assert dict(first.rejected) == expected
    assert _poll(zone).registered == [f"{DAY}/{GOOD}"]
    assert _poll(zone).rejected == []
    # Asked directly, the storage refuses to open the link too.
    alias = channel_storage_alias(zone.channel)
    with (
        pytest.raises(StorageReadError, match="a symbolic link, not a file"),
        stored_file_open(alias, f"{DAY}/{_name(1)}"),
    ):
        pass
    assert_secret_kept(SECRET)


def test_s3_keys_that_climb_out_of_the_folder_are_rejected_never_read_nor_deleted_elsewhere(
    world: World, request: pytest.FixtureRequest, settings: Any, tmp_path: Path
) -> None:
    """Before: a key's path was normalized when read or deleted (``a/../b`` -> ``b``), so the
    retention purge of a rejected climbing key deleted another partner's object, and reading
    one read the other object."""
    zone = dropzone_make("s3", request, world.partner, settings, tmp_path)
    DataSourceFactory.create(dpid=31, partner=PartnerFactory.create(slug="bob"))
    bobs = "bob/date=2026-11-28/ftp_dpm_31_1700000000.sync"
    zone.put(bobs, SECRET_LINES)
    climbing = [
        f"{DAY}/../../{bobs}",
        f"acme//date=2026-11-28/{GOOD}",
        f"{DAY}/./{GOOD}",
        f"{DAY}//{GOOD}",
        f"{DAY}/..",
    ]
    zone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    for key in climbing:
        zone.put(key, b"u1\td_sid=10\n")
    first = _poll(zone)
    assert dict(first.rejected) == dict.fromkeys(climbing, STEPS)
    assert _poll(zone).registered == [f"{DAY}/{GOOD}"]
    assert _poll(zone).rejected == []
    alias = channel_storage_alias(zone.channel)
    with (
        pytest.raises(StorageReadError, match=re.escape(STEPS)),
        stored_file_open(alias, f"{DAY}/../../{bobs}"),
    ):
        pass

    # The retention purge deletes each rejected key itself, and nothing of bob's.
    InboundFile.objects.update(received_at=timezone.now() - timedelta(days=31))
    purged = inbound_purge()
    assert purged.deleted == len(climbing) + 1
    s3 = s3_client(zone.channel.endpoint_url)
    left = [
        item["Key"] for item in s3.list_objects_v2(Bucket=zone.channel.bucket).get("Contents", [])
    ]
    assert left == [f"inbound/{bobs}"]
    assert_secret_kept(SECRET)


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)
def test_a_file_swapped_for_a_link_while_it_is_registered_is_not_read(
    dropzone: DropZone, world: World, tmp_path: Path
) -> None:
    """Between the listing that found it and the read that computes its SHA-256 (the swap
    made at the moment its batch is created, just before the read): the read refuses the
    link, the file is tried again, and the next poll rejects what is there."""
    assert dropzone.folder is not None
    secret = tmp_path / "deploy.env"
    secret.write_bytes(SECRET_LINES)
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    _poll(dropzone)
    path = dropzone.folder / DAY / GOOD

    def swap(sender: Any, instance: InboundBatch, created: bool, **kwargs: Any) -> None:
        if created and not path.is_symlink():
            path.unlink()
            path.symlink_to(secret)

    post_save.connect(swap, sender=InboundBatch, weak=False)
    try:
        second = _poll(dropzone)
    finally:
        post_save.disconnect(swap, sender=InboundBatch)
    assert (second.registered, second.unreadable) == ([], [(f"{DAY}/{GOOD}", LINK)])
    assert not InboundBatch.objects.exists()  # its registration rolled back
    assert _poll(dropzone).rejected == [(f"{DAY}/{GOOD}", LINK)]
    assert_secret_kept(SECRET)


def test_a_folder_swapped_for_a_link_while_the_poller_walks_is_not_entered(
    world: World, request: pytest.FixtureRequest, settings: Any, tmp_path: Path
) -> None:
    """Listed as a folder, made a link before the poller goes into it: it is not entered
    (each step is opened without following a link), and the next poll rejects the link.
    Before, the walk went through the link and registered what is behind it."""
    zone = dropzone_make("local", request, world.partner, settings, tmp_path)
    assert zone.folder is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / _name(9)).write_bytes(SECRET_LINES)
    zone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    zone.put(f"acme/date=2026-11-29/{_name(1)}", b"u1\td_sid=10\n")
    later = zone.folder / "acme/date=2026-11-29"

    def swap(first: str) -> None:
        assert first == f"{DAY}/{GOOD}"  # the walk goes in name order
        shutil.rmtree(later)
        later.symlink_to(outside, target_is_directory=True)

    with _on_first_object_noted(swap):
        first = _poll(zone)
    assert (first.listed, first.rejected, first.unreadable) == (1, [], [])
    assert _poll(zone).rejected == [("acme/date=2026-11-29", LINK)]
    assert not ChannelObject.objects.filter(path__contains=_name(9)).exists()
    assert_secret_kept(SECRET)


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)
def test_folders_nested_too_deep_are_not_entered_and_said_once(
    dropzone: DropZone, world: World
) -> None:
    """Thousands of nested folders would make every poll of the channel slow (and, with
    os.walk, fail it: a RecursionError past about a thousand)."""
    assert dropzone.folder is not None
    deep = "acme/" + "/".join(f"d{number}" for number in range(40))
    (dropzone.folder / deep).mkdir(parents=True)
    (dropzone.folder / deep / GOOD).write_bytes(b"u1\td_sid=10\n")
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    first = _poll(dropzone)
    [(path, reason)] = first.rejected
    assert path == "acme/" + "/".join(f"d{number}" for number in range(16))  # the 17th step
    assert reason == (
        "a folder more than 16 folders deep, not entered: put the files in a date=YYYY-MM-DD folder"
    )
    assert _poll(dropzone).registered == [f"{DAY}/{GOOD}"]
    assert _poll(dropzone).rejected == []


@pytest.mark.parametrize("dropzone", ["local", "sftp"], indirect=True)
def test_the_partner_s_folder_made_a_link_is_rejected_and_not_entered(
    dropzone: DropZone, world: World, tmp_path: Path
) -> None:
    """Before, the walk started through the link (os.walk and SFTP opendir follow a link
    given as the folder to list) and took what is behind it."""
    assert dropzone.folder is not None
    outside = tmp_path / "outside"
    (outside / "date=2026-11-28").mkdir(parents=True)
    (outside / "date=2026-11-28" / GOOD).write_bytes(SECRET_LINES)
    dropzone.folder.mkdir(parents=True, exist_ok=True)
    (dropzone.folder / "acme").symlink_to(outside, target_is_directory=True)
    first = _poll(dropzone)
    assert (first.listed, first.rejected) == (1, [("acme", LINK)])
    again = _poll(dropzone)
    assert (again.registered, again.rejected) == ([], [])
    assert not ChannelObject.objects.filter(path__contains=GOOD).exists()
    assert_secret_kept(SECRET)
