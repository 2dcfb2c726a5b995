from __future__ import annotations

import gzip
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import DataSource, Partner, Receipt
from segments.models import Profile
from tests.factories import DataSourceFactory, IDMappingFactory, PartnerFactory, TraitFactory

RECEIPT_FIELDS = (
    "records_received",
    "format_errors",
    "invalid_ids",
    "no_matching_ids",
    "no_trait_realized",
    "records_processed",
    "stored_records",
    "total_devices",
    "total_signals",
    "total_unused_signals",
    "total_realized_traits",
    "total_removed_traits",
    "total_traits_failed_validation",
    "total_users_with_failed_traits",
)


def counters(receipt: Receipt) -> dict[str, int]:
    return {name: getattr(receipt, name) for name in RECEIPT_FIELDS}


def expect(**values: int) -> dict[str, int]:
    """A full set of receipt counters: those given, every other one 0."""
    unknown = set(values) - set(RECEIPT_FIELDS)
    assert not unknown, unknown
    return {name: values.get(name, 0) for name in RECEIPT_FIELDS}


class World:
    """The SPEC §4 worked example's world: data source 21 (DPUUIDs) with traits 10 and 11,
    data source 22 with trait 90; u1 and u2 mapped to profiles, u9 not."""

    def __init__(self) -> None:
        self.partner: Partner = PartnerFactory.create(pid=1001, slug="acme", name="Acme Data")
        self.source: DataSource = DataSourceFactory.create(dpid=21, partner=self.partner)
        self.other: DataSource = DataSourceFactory.create(dpid=22, partner=self.partner)
        TraitFactory.create(sid=10, data_source=self.source)
        TraitFactory.create(sid=11, data_source=self.source)
        TraitFactory.create(sid=90, data_source=self.other)
        self.u1 = IDMappingFactory.create(data_source=self.source, dpuuid="u1").profile
        self.u2 = IDMappingFactory.create(data_source=self.source, dpuuid="u2").profile

    def held(self, profile: Profile, dpid: int = 21) -> set[int]:
        row = profile.trait_sets.filter(data_source_id=dpid).first()
        return {int(sid) for sid in row.realized} if row else set()


@pytest.fixture
def world(db: Any) -> World:
    return World()


Deliver = Callable[..., Receipt]


@pytest.fixture
def deliver(tmp_path: Path) -> Deliver:
    """Write files (name -> text or bytes), register them as one delivery, process it."""

    def run(files: dict[str, str | bytes], **kwargs: Any) -> Receipt:
        paths = []
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            if name.endswith(".gz"):
                data = gzip.compress(data)
            path = tmp_path / name
            path.write_bytes(data)
            paths.append(path)
        registration = inbound_files_register(paths=paths, **kwargs)
        assert len(registration.batches) == 1, registration
        return inbound_batch_process(batch_id=registration.batches[0].pk)

    return run


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--yes", "--quiet", *args],
        input=data,
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def platform_key(tmp_path: Path, settings: Any) -> Iterator[Path]:
    """A GnuPG home with the platform's key pair, configured as PGP_GNUPG_HOME."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        "S2S Portal <s2s@example.com>",
        "future-default",
        "default",
        "never",
    )
    settings.PGP_GNUPG_HOME = str(home)
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def encrypt(home: Path, data: str | bytes, *options: str) -> bytes:
    """``data`` encrypted to the platform's key (``options``: e.g. ``--compress-algo``)."""
    return gpg(
        home,
        "--trust-model",
        "always",
        "-r",
        "s2s@example.com",
        *options,
        "--encrypt",
        data=data.encode() if isinstance(data, str) else data,
    )
