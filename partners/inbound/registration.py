"""Registering delivered files: checked by name and ownership, grouped into batches (split
parts together), a file processed before recorded as a duplicate. Nothing is queued here
(:mod:`partners.inbound.queueing` does that once the registration commits)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from partners.inbound.errors import ALREADY_PROCESSED, PART_ALREADY_HERE, InboundRejected
from partners.inbound.name_checks import idsync_name_check, traits_name_check
from partners.inbound.names import FileKind, FileNameError, InboundFileName, parse_inbound_file_name
from partners.models import DataSource, InboundBatch, InboundFile, Partner
from partners.storage import LOCAL, StoredFile, stored_file_open


@dataclass(frozen=True)
class Registration:
    batches: list[InboundBatch]  # complete: to be queued
    duplicates: list[InboundFile]
    waiting: list[InboundBatch] = field(default_factory=list)  # split parts: more may come
    files: list[InboundFile] = field(default_factory=list)  # batched (duplicates aside)
    # The waiting batches the delivery's split parts belong to, a part sent again included.
    parts_of: list[InboundBatch] = field(default_factory=list)


def _sha256(delivery: StoredFile) -> str:
    """Read through once (a stream). A file that cannot be read raises StorageReadError: it
    may be a passing network fault, so the caller decides (a poller tries again later)."""
    with stored_file_open(delivery.storage, delivery.path) as stream:
        digest = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()


def _waiting_batch_lock(*, owner: Partner, key: str, fields: dict[str, Any]) -> InboundBatch:
    """The partner's waiting batch of this name (made if there is none), locked until the
    registration commits: parts of one file register one after the other, so a part sent
    twice at once is seen by the second (the lock is on one row: other files go on).

    Two parts arriving at once meet here: the partial unique constraint lets only one
    waiting batch exist per name, and get_or_create re-reads it. A batch the release queued
    in the meantime is no longer waiting: the part starts the next one."""
    while True:
        batch, _ = InboundBatch.objects.get_or_create(
            partner=owner, key=key, status=InboundBatch.Status.WAITING, defaults=fields
        )
        waiting = InboundBatch.objects.select_for_update().filter(
            pk=batch.pk, status=InboundBatch.Status.WAITING
        )
        locked = waiting.first()
        if locked is not None:
            return locked


def _duplicate_of(batch: InboundBatch, parsed: InboundFileName, sha: str) -> str:
    """Why this delivery is a duplicate ("" when it is not): its name and content were
    processed before, or, a part of a split file, it is already in the waiting batch (read
    through the (batch, split) index, not every part)."""
    if InboundFile.objects.filter(
        name=parsed.name, sha256=sha, status=InboundFile.Status.PROCESSED
    ).exists():
        return ALREADY_PROCESSED
    if (
        batch.status == InboundBatch.Status.WAITING
        and batch.files.filter(split=parsed.split, name=parsed.name, sha256=sha).exists()
    ):
        return PART_ALREADY_HERE
    return ""


# A delivery once checked: its name parsed, its owner, the data source of its IDs and its target.
_Checked = tuple[StoredFile, InboundFileName, Partner, DataSource | None, DataSource]


def inbound_files_register(
    *,
    paths: Sequence[Path] = (),
    files: Sequence[StoredFile] = (),
    partner: Partner | None = None,
    complete: bool = True,
    via: str = InboundFile.Via.COMMAND,
) -> Registration:
    """Check and register delivered files (``paths`` on this disk, ``files`` anywhere),
    grouped into batches (split parts together).

    Everything is checked before anything is stored: a bad name, an unknown or foreign
    DPID, an empty file or a mix of kinds raises :class:`InboundRejected`. A file whose name
    and content were processed before is recorded as a duplicate and not batched.

    With ``complete`` the files are every part there is (the ``ingest`` command): their
    batches are queued. Otherwise (an upload, a drop zone) the parts of a split file join the
    partner's waiting batch of that name, which :func:`inbound_waiting_batches_release`
    queues once no part arrived for a while; a file that is not split is queued at once.
    ``via`` is the channel the files came by (an :class:`InboundFile.Via`), for the partner's
    *My files*.
    """
    deliveries = [StoredFile.local(path) for path in paths] + list(files)
    checked = [_delivery_check(delivery, partner) for delivery in deliveries]
    groups: dict[tuple[int, str], list[_Checked]] = defaultdict(list)
    for entry in checked:
        groups[(entry[2].pk, entry[1].batch_key)].append(entry)

    registration = Registration(batches=[], duplicates=[])
    with transaction.atomic():
        for (_, key), entries in groups.items():
            _group_register(registration, key=key, entries=entries, complete=complete, via=via)
    return registration


def _delivery_check(delivery: StoredFile, partner: Partner | None) -> _Checked:
    """A delivery's name, file and owner checked; raises :class:`InboundRejected`."""
    try:
        parsed = parse_inbound_file_name(delivery.name)
    except FileNameError as exc:
        raise InboundRejected(delivery.name, str(exc)) from exc
    if delivery.storage == LOCAL and not Path(delivery.path).is_file():
        raise InboundRejected(delivery.name, "no such file")
    if delivery.size == 0:
        raise InboundRejected(delivery.name, "the file is empty")
    if parsed.kind is FileKind.ID_SYNC:
        owner, ids, target = idsync_name_check(parsed, partner)
    else:
        owner, ids, target = traits_name_check(parsed, partner)
    return delivery, parsed, owner, ids, target


def _group_register(
    registration: Registration,
    *,
    key: str,
    entries: list[_Checked],
    complete: bool,
    via: str,
) -> None:
    """One batch's files (a partner's deliveries of one batch key) recorded, and the batch
    added to ``registration`` as queued, waiting, or deleted when every file was a duplicate."""
    entries.sort(key=lambda e: (e[1].split or 0, e[1].name))
    _, first, owner, ids, target = entries[0]
    fields: dict[str, Any] = {
        "kind": first.kind.value,
        "data_source": ids,
        "target": target,
        "overwrite": first.overwrite,
    }
    if complete or first.split is None:
        batch = InboundBatch.objects.create(
            key=key, partner=owner, status=InboundBatch.Status.QUEUED, **fields
        )
    else:
        batch = _waiting_batch_lock(owner=owner, key=key, fields=fields)
    fresh = 0
    for delivery, parsed, _, _, _ in entries:
        file = _file_record(batch, delivery=delivery, parsed=parsed, owner=owner, via=via)
        if file.status == InboundFile.Status.DUPLICATE:
            registration.duplicates.append(file)
        else:
            fresh += 1
            registration.files.append(file)
    if batch.status == InboundBatch.Status.WAITING:
        if fresh and batch not in registration.waiting:
            registration.waiting.append(batch)
        if fresh or batch.files.exists():
            registration.parts_of.append(batch)
        else:
            batch.delete()
    elif fresh:
        registration.batches.append(batch)
    else:
        batch.delete()


def _file_record(
    batch: InboundBatch,
    *,
    delivery: StoredFile,
    parsed: InboundFileName,
    owner: Partner,
    via: str,
) -> InboundFile:
    """The delivery's InboundFile: in ``batch``, or a duplicate in none."""
    sha = delivery.sha256 or _sha256(delivery)
    error = _duplicate_of(batch, parsed, sha)
    return InboundFile.objects.create(
        batch=None if error else batch,
        partner=owner,
        name=parsed.name,
        split=parsed.split,
        storage=delivery.storage,
        path=delivery.path,
        via=via,
        size=delivery.size,
        sha256=sha,
        status=InboundFile.Status.DUPLICATE if error else InboundFile.Status.RECEIVED,
        error=error,
    )
