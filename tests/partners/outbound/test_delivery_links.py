"""An export never writes through a link: real symbolic links planted in a destination's
folder (at the temporary name, at the final name, as the folder itself or a folder above it)
on a local channel and over SFTP (a real server), and a stored folder that leaves the
partner's folder. Nothing is written outside the channel's folder of the partner.

What happens, by design: a link at a temporary (``.partial``) or final name is removed and
replaced by the file (never written through; the run succeeds); a folder on the way that is
a link fails the run with the reason, and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from partners.models import Destination, InboundChannel, OutboundRun
from partners.outbound.runs import outbound_run
from partners.storage import StorageRefused
from tests.partners.dropzones.conftest import dropzone_make, sftp_server  # noqa: F401 (fixture)
from tests.partners.inbound.conftest import Deliver, World
from tests.partners.outbound.test_runs import _check_info, _destination

# No TIMESTAMP: the names are known before the run, so links can wait at them.
TEMPLATE = "<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>SPLITNUM.sync"
VICTIM = b"the deployment's own file\n"


def _names(destination: Destination) -> dict[str, str]:
    data = f"s3_{destination.pk}_21_full.sync"
    info = f"s3_{destination.pk}_21_full.info"
    return {
        "data": data,
        "info": info,
        "data.partial": f"{data}.partial",
        "info.partial": f"{info}.partial",
    }


def _plain_files(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` (links would show: every entry must be a plain file)."""
    out = {}
    for entry in sorted(folder.iterdir()):
        assert not entry.is_symlink(), entry
        out[entry.name] = entry.read_bytes()
    return out


def _sftp_destination(
    world: World, request: pytest.FixtureRequest, settings: Any, tmp_path: Path
) -> tuple[Destination, Path]:
    zone = dropzone_make("sftp", request, world.partner, settings, tmp_path)
    assert zone.folder is not None
    _destination(world, tmp_path)  # the segments (its own channel is not used)
    destination = Destination.objects.get()
    destination.channel = zone.channel
    destination.save()
    return destination, zone.folder


@pytest.fixture(params=["local", "sftp"])
def zone(
    request: pytest.FixtureRequest, world: World, settings: Any, tmp_path: Path
) -> tuple[Destination, Path]:
    """A destination (file names without a time stamp) and the folder its channel serves."""
    if request.param == "sftp":
        destination, root = _sftp_destination(world, request, settings, tmp_path)
    else:
        root = tmp_path / "channel"
        destination = _destination(world, root)
    destination.file_name_template = TEMPLATE
    destination.full_clean()
    destination.save()
    return destination, root


@pytest.mark.parametrize(
    "planted", ["data.partial", "info.partial", "data", "info", "dangling", "hard link"]
)
def test_a_link_at_a_name_the_run_writes_is_replaced_never_written_through(
    zone: tuple[Destination, Path], deliver: Deliver, tmp_path: Path, planted: str
) -> None:
    """Before: a link at the temporary name was written through (the file it points at was
    overwritten, or a dangling link's target created, outside the channel)."""
    destination, root = zone
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    folder = root / "acme" / "outbound"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.env"
    victim.write_bytes(VICTIM)
    names = _names(destination)
    if planted == "dangling":
        (folder / names["data.partial"]).symlink_to(tmp_path / "created-outside")
    elif planted == "hard link":  # a regular file, the victim's other name
        os.link(victim, folder / names["data.partial"])
    else:
        (folder / names[planted]).symlink_to(victim)

    run = outbound_run(destination=destination)
    assert run.status == OutboundRun.Status.SUCCEEDED
    assert victim.read_bytes() == VICTIM
    assert not (tmp_path / "created-outside").exists()
    files = _plain_files(folder)
    assert sorted(files) == sorted([names["data"], names["info"]])
    assert _check_info(files)["Totals"]["TotalNumberLines"] == 1


@pytest.mark.parametrize("linked", ["acme/outbound", "acme", "acme/out"])
def test_a_folder_on_the_way_that_is_a_link_fails_the_run_and_nothing_is_written(
    zone: tuple[Destination, Path], deliver: Deliver, tmp_path: Path, linked: str
) -> None:
    """Before: the files went wherever the link led (another partner's folder, any folder
    the worker can write)."""
    destination, root = zone
    if linked == "acme/out":
        destination.folder = "out/daily"
        destination.full_clean()
        destination.save()
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    (root / linked).symlink_to(elsewhere, target_is_directory=True)

    with pytest.raises(StorageRefused, match="nothing is written through a link"):
        outbound_run(destination=destination)
    run = destination.runs.get()
    assert run.status == OutboundRun.Status.FAILED
    assert run.error == (
        f"{linked} is a symbolic link in the channel's folder: nothing is written through a"
        " link (make it a plain folder)"
    )
    assert list(elsewhere.rglob("*")) == []
    assert (root / linked).is_symlink()  # left as the partner made it


def test_a_run_that_fails_after_its_temporary_file_leaves_no_partial(
    zone: tuple[Destination, Path], deliver: Deliver
) -> None:
    """A folder planted at the final name: the rename fails, the run fails with it, and the
    temporary file it wrote is not left behind."""
    destination, root = zone
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    folder = root / "acme" / "outbound"
    (folder / _names(destination)["data"]).mkdir(parents=True)
    with pytest.raises(OSError, match="Is a directory"):
        outbound_run(destination=destination)
    assert destination.runs.get().status == OutboundRun.Status.FAILED
    assert sorted(os.listdir(folder)) == [_names(destination)["data"]]


def test_a_stored_folder_that_climbs_out_fails_the_run_before_anything_is_written(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    """A folder stored before the rules (or written around the model) is checked again when
    the run starts. Before: ``out/../../globex`` wrote into another partner's folder."""
    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    (tmp_path / "globex").mkdir()
    Destination.objects.filter(pk=destination.pk).update(folder="out/../../globex")
    destination.refresh_from_db()
    with pytest.raises(ValueError, match="nothing was delivered"):
        outbound_run(destination=destination)
    run = destination.runs.get()
    assert run.error == (
        "nothing was delivered: the destination's folder 'out/../../globex' is refused"
        " (a plain folder path: no empty, '.' or '..' steps)"
    )
    assert not (tmp_path / "acme").exists()  # nothing in its own folder either
    assert list((tmp_path / "globex").iterdir()) == []


def test_a_folder_with_a_backslash_fails_the_run_before_anything_is_written(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    """The database refuses to store one; a destination given to a run as it is in memory
    (its folder never saved) is checked by the run too."""
    destination = _destination(world, tmp_path)
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    destination.folder = "out\\..\\..\\globex"
    with pytest.raises(ValueError, match="nothing was delivered"):
        outbound_run(destination=destination)
    assert destination.runs.get().error == (
        "nothing was delivered: the destination's folder 'out\\\\..\\\\..\\\\globex' is"
        " refused (a plain folder path: no backslash, a path separator on Windows servers)"
    )
    assert not (tmp_path / "acme").exists()


def test_the_channel_s_own_folder_may_be_a_link(
    world: World, deliver: Deliver, tmp_path: Path
) -> None:
    """The prefix staff typed is trusted as it is (a deployment may link /srv/exchange
    elsewhere): only what is below it, the partner's side, must be plain folders."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    destination = _destination(world, tmp_path / "linked")
    InboundChannel.objects.filter(pk=destination.channel_id).update(prefix=str(tmp_path / "linked"))
    deliver({"ftp_dpm_21_1700000000.sync": "u1\td_sid=10\n"})
    run = outbound_run(destination=destination)
    assert run.status == OutboundRun.Status.SUCCEEDED
    assert len(os.listdir(real / "acme" / "outbound")) == 2
