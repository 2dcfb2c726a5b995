"""PGP-encrypted inbound files, decrypted as a stream with the platform's private key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from partners.inbound.errors import InboundRejected
from tests.partners.inbound.conftest import Deliver, World, encrypt

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
