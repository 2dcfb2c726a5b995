"""PGP-encrypted inbound files, decrypted as a stream with the platform's private key."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from partners.inbound.errors import InboundRejected
from tests.partners.inbound.conftest import Deliver, World, encrypt, gpg

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs GnuPG")


def test_a_pgp_file_is_decrypted_and_processed(
    world: World, deliver: Deliver, platform_key: Path
) -> None:
    receipt = deliver(
        {"ftp_dpm_21_1700000000.sync.pgp": encrypt(platform_key, "u1\td_sid=10\nu2\td_sid=11\n")}
    )
    assert (receipt.records_received, receipt.stored_records) == (2, 2)
    assert world.held(world.u1) == {10}


def test_a_file_for_another_key_is_refused_with_a_reason(
    world: World, deliver: Deliver, platform_key: Path, tmp_path: Path
) -> None:
    with pytest.raises(InboundRejected) as caught:
        deliver({"ftp_dpm_21_1700000000.sync.gpg": b"-----BEGIN PGP MESSAGE-----\nnonsense\n"})
    assert "could not be decrypted" in caught.value.reason
    assert world.held(world.u1) == set()


def test_pgp_without_a_configured_key(world: World, deliver: Deliver, settings: Any) -> None:
    settings.PGP_GNUPG_HOME = ""
    with pytest.raises(InboundRejected, match="no private key configured"):
        deliver({"ftp_dpm_21_1700000000.sync.pgp": b"\x85\x01"})


def _first_packet(message: bytes) -> bytes:
    """The first OpenPGP packet of ``message`` (RFC 4880 §4.2: old or new format header)."""
    ctb = message[0]
    if ctb & 0x40:  # new format, a one- or two-octet length here
        first = message[1]
        if first < 192:
            return message[: 2 + first]
        return message[: 3 + ((first - 192) << 8) + message[2] + 192]
    size = {0: 1, 1: 2, 2: 4}[ctb & 3]
    return message[: 1 + size + int.from_bytes(message[1 : 1 + size], "big")]


def test_gpg_working_long_without_decrypting_anything_stops_the_file(
    world: World, deliver: Deliver, platform_key: Path, tmp_path: Path, settings: Any
) -> None:
    """3,000 packets for a hidden recipient before the platform's own: gpg tries the
    platform's key on each (milliseconds apiece; 20,000 of them in 1.8 MB held a worker a
    minute), writing nothing meanwhile."""
    settings.INBOUND_PGP_IDLE_SECONDS = 1
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    gpg(other, "--passphrase", "", "--quick-gen-key", "Other <o@example.com>", "future-default")
    hidden = gpg(
        other, "-r", "o@example.com", "--throw-keyids", "--encrypt", data=b"u1\td_sid=10\n"
    )
    subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "gpg-agent"], check=False)
    slow = _first_packet(hidden) * 3_000 + encrypt(platform_key, "u1\td_sid=10\n")
    started = time.monotonic()
    with pytest.raises(InboundRejected) as caught:
        deliver({"ftp_dpm_21_1700000000.sync.gpg": slow})
    took = time.monotonic() - started
    print(f"refused in {took:.1f} s: {caught.value.reason}")
    assert "gpg worked 1 seconds without decrypting a byte of it" in caught.value.reason
    assert took < 1 + 10
    assert world.held(world.u1) == set()
