"""One bad object never blocks a channel: names a partner (or a broken client) may leave in a
drop zone, each rejected on its own with a reason while the good files beside it are taken."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from partners.dropzones.services import inbound_channel_poll, inbound_poll
from partners.models import ChannelObject, InboundBatch, InboundChannel, InboundFile
from partners.storage import channel_storage
from tests.partners.dropzones.conftest import DropZone
from tests.partners.inbound.conftest import World

DAY = "acme/date=2026-11-28"
GOOD = "ftp_dpm_21_1700000000.sync"
HOSTILE = {
    # a split number beyond 2^31 (the part-number column is a 32-bit integer)
    f"{GOOD}.99999999999": "part number 99999999999 is too large (at most 9999)",
    # a DPID beyond 2^31
    "ftp_dpm_99999999999_1700000000.sync": "'99999999999' is not a DPID (at most 2147483647)",
    # a control character in the name
    "ftp_dpm_21_1700000000\x01.sync": "the name holds a control character (U+0001)",
}
# Longer than any name we keep: only S3 keys can be (a file system stops names at 255 bytes).
TOO_LONG = {GOOD + ".gz" * 100: "the name is longer than 255 characters"}


def _poll(zone: DropZone) -> object:
    return inbound_poll(channel=InboundChannel.objects.get(pk=zone.channel.pk))


def test_hostile_names_are_rejected_one_by_one_and_the_good_file_is_taken(
    dropzone: DropZone, world: World
) -> None:
    hostile = HOSTILE | (TOO_LONG if dropzone.channel.kind == InboundChannel.Kind.S3 else {})
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    for name in hostile:
        dropzone.put(f"{DAY}/{name}", b"u1\td_sid=10\n")
    first = _poll(dropzone)  # names that are not even text are refused at first sight
    result = _poll(dropzone)
    assert result.registered == [f"{DAY}/{GOOD}"]  # type: ignore[attr-defined]
    reasons = dict(first.rejected + result.rejected)  # type: ignore[attr-defined]
    assert {path.removeprefix(f"{DAY}/"): reason for path, reason in reasons.items()} == hostile
    assert InboundBatch.objects.get().status == InboundBatch.Status.QUEUED
    rejected = InboundFile.objects.filter(status=InboundFile.Status.REJECTED)
    assert {f.error for f in rejected} == set(hostile.values())
    # Said once: the next polls neither fail nor report them again.
    again = _poll(dropzone)
    assert (again.rejected, again.registered) == ([], [])  # type: ignore[attr-defined]


@pytest.mark.parametrize("dropzone", ["sftp", "local"], indirect=True)
def test_a_name_that_is_not_utf8_is_rejected_and_does_not_block_the_channel(
    dropzone: DropZone, world: World
) -> None:
    """S3 keys are UTF-8 by definition; an SFTP server or a local folder may hold any bytes."""
    dropzone.put(f"{DAY}/{GOOD}", b"u1\td_sid=10\n")
    assert dropzone.folder is not None
    raw = os.fsencode(dropzone.folder / DAY) + b"/ftp_dpm_21_17000000\xff1.sync"
    with open(raw, "wb") as out:
        out.write(b"u1\td_sid=10\n")
    first = _poll(dropzone)
    result = _poll(dropzone)
    assert result.registered == [f"{DAY}/{GOOD}"]  # type: ignore[attr-defined]
    [(path, reason)] = first.rejected + result.rejected  # type: ignore[attr-defined]
    assert path == f"{DAY}/ftp_dpm_21_17000000\\xff1.sync"
    assert reason == "the name is not UTF-8 text (byte 0xff): rename the file"
    assert ChannelObject.objects.filter(state=ChannelObject.State.REJECTED).count() == 1
    assert _poll(dropzone).rejected == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "ref", ["SECRET_KEY", "DATABASES", "S2S_CREDENTIALS_", "s2s_credentials_x"]
)
def test_a_credentials_reference_names_credentials_only(
    world: World, ref: str, settings: Any
) -> None:
    """Before: credentials_ref='SECRET_KEY' was accepted and sent as the SFTP password to the
    host staff typed."""
    channel = InboundChannel(
        partner=world.partner,
        name="sftp",
        kind=InboundChannel.Kind.SFTP,
        host="127.0.0.1",
        port=1,  # nothing listens: the test must stop before any connection
        username="acme",
        prefix="/in",
        credentials_ref=ref,
    )
    with pytest.raises(ValidationError) as caught:
        channel.full_clean()
    assert "starting with S2S_CREDENTIALS_" in str(caught.value.message_dict["credentials_ref"])
    channel.credentials_ref = ""
    channel.save()
    InboundChannel.objects.filter(pk=channel.pk).update(credentials_ref=ref)  # stored earlier
    result = inbound_channel_poll(channel_id=channel.pk)
    assert result is not None
    channel.refresh_from_db()
    assert channel.last_poll_result.startswith(f"failed: channel {channel.pk}: credentials")
    assert "nothing was read" in channel.last_poll_result
    assert settings.SECRET_KEY not in channel.last_poll_result
    assert result.unreadable


def test_a_reference_in_the_namespace_is_read(world: World, settings: Any) -> None:
    settings.S2S_CREDENTIALS_ACME_SFTP = "key:/keys/acme"
    channel = InboundChannel.objects.create(
        partner=world.partner,
        name="sftp",
        kind=InboundChannel.Kind.SFTP,
        host="127.0.0.1",
        username="acme",
        prefix="/in",
        credentials_ref="S2S_CREDENTIALS_ACME_SFTP",
    )
    channel.full_clean()
    storage = channel_storage(channel)
    assert storage.params["key_filename"] == "/keys/acme"  # type: ignore[attr-defined]
