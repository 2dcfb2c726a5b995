"""Drop zones over the real protocols: S3 (moto in server mode, over HTTP) and SFTP (an
asyncssh server on a loopback port), plus a local folder."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from partners.models import InboundChannel, Partner
from tests.conftest import s3_client
from tests.partners.inbound.conftest import World


@dataclass(frozen=True)
class SFTPServer:
    port: int
    root: Path  # what the server shows as "/"


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    """A real SSH server speaking SFTP (user acme, password secret), chrooted to a folder."""
    with sftp_serving(tmp_path_factory.mktemp("sftp-root")) as server:
        yield server


class ChrootSFTP(asyncssh.SFTPServer):
    """What the server does with SFTP requests: asyncssh's local file system, under a root
    (paths are mapped under it; like OpenSSH, links are listed as links and followed when
    a path is opened). Tests subclass it to hold a request."""

    root: Path

    def __init__(self, channel: Any) -> None:
        super().__init__(channel, chroot=str(self.root).encode())


@contextmanager
def sftp_serving(root: Path, sftp: type[ChrootSFTP] = ChrootSFTP) -> Iterator[SFTPServer]:
    """Serve ``root`` over SFTP (user acme, password secret) on a loopback port, from a
    thread of its own, with ``sftp`` answering the requests."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return (username, password) == ("acme", "secret")

    rooted = type("RootedSFTP", (sftp,), {"root": root})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        return await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[host_key], sftp_factory=rooted
        )

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield SFTPServer(port=acceptor.get_port(), root=root)
    finally:
        acceptor.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


# A drop zone of each kind for the world's partner (slug "acme"), and a way to put a file in
# it as the partner would (S3 PUT; for SFTP and local, a write into the served folder).
@dataclass
class DropZone:
    channel: InboundChannel
    put: Callable[[str, bytes], object]
    remove: Callable[[str], object]
    exists: Callable[[str], bool]
    folder: Path | None = None  # SFTP and local: where the served files are on this disk


@pytest.fixture(params=["s3", "sftp", "local"])
def dropzone(
    request: pytest.FixtureRequest, world: World, settings: Any, tmp_path: Path
) -> DropZone:
    return dropzone_make(request.param, request, world.partner, settings, tmp_path)


def dropzone_make(
    kind: str, request: pytest.FixtureRequest, partner: Partner, settings: Any, tmp_path: Path
) -> DropZone:
    """A drop zone of ``kind`` for ``partner`` (slug "acme")."""
    settings.SFTP_KNOWN_HOST_FILE = str(tmp_path / "known_hosts")
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        settings.S2S_CREDENTIALS_DROPZONE_TEST_S3 = "testing:testing"
        channel = InboundChannel.objects.create(
            partner=partner,
            name="Acme bucket",
            kind=kind,
            bucket=bucket,
            prefix="inbound",
            region="us-east-1",
            endpoint_url=endpoint,
            credentials_ref="S2S_CREDENTIALS_DROPZONE_TEST_S3",
        )
        s3 = s3_client(endpoint)

        def key(path: str) -> str:
            return f"inbound/{path}"

        def exists(path: str) -> bool:
            return "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=key(path))

        return DropZone(
            channel,
            lambda path, data: s3.put_object(Bucket=bucket, Key=key(path), Body=data),
            lambda path: s3.delete_object(Bucket=bucket, Key=key(path)),
            exists,
        )
    if kind == "sftp":
        server: SFTPServer = request.getfixturevalue("sftp_server")
        folder = server.root / f"drop-{tmp_path.name}"
        settings.S2S_CREDENTIALS_DROPZONE_TEST_SFTP = "secret"
        channel = InboundChannel.objects.create(
            partner=partner,
            name="Acme SFTP",
            kind=kind,
            host="127.0.0.1",
            port=server.port,
            username="acme",
            prefix=f"/{folder.name}",
            credentials_ref="S2S_CREDENTIALS_DROPZONE_TEST_SFTP",
        )
    else:
        folder = tmp_path / "dropzone"
        channel = InboundChannel.objects.create(
            partner=partner, name="Acme folder", kind=kind, prefix=str(folder)
        )

    def put(path: str, data: bytes) -> None:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return DropZone(
        channel,
        put,
        lambda path: (folder / path).unlink(),
        lambda path: (folder / path).exists(),
        folder,
    )


def assert_secret_kept(secret: str) -> None:
    """``secret`` is nowhere a partner (or staff) could see it: the files, channel objects,
    batches and rejected lines recorded, the receipts as text, e-mail (text, HTML) and error
    workbook, and every e-mail sent."""
    import io

    from django.core import mail
    from openpyxl import load_workbook

    from partners.models import ChannelObject, InboundBatch, InboundFile, LineError, Receipt
    from partners.receipts.render import receipt_text
    from partners.receipts.services import receipt_email_build, receipt_workbook_bytes

    seen: list[str] = []
    for model in (InboundFile, ChannelObject, InboundBatch, LineError, Receipt):
        seen.extend(str(row) for row in model.objects.values())
    messages = list(mail.outbox)
    for receipt in Receipt.objects.all():
        seen.append(receipt_text(receipt))
        messages.append(
            receipt_email_build(receipt, recipients=["ops@acme.example"], internal=False)
        )
        workbook = receipt_workbook_bytes(receipt)
        if workbook:
            book = load_workbook(io.BytesIO(workbook), read_only=True)
            for sheet in book.worksheets:
                seen.extend(str(row) for row in sheet.iter_rows(values_only=True))
    for message in messages:
        seen.extend([str(message.subject), str(message.body)])
        seen.extend(str(content) for content, _ in getattr(message, "alternatives", []))
        for attachment in message.attachments:
            content = attachment[1] if isinstance(attachment, tuple) else attachment
            seen.append(repr(content))
    assert not [text for text in seen if secret in text]
