"""Drop zones: poll for new files (each registered exactly once), purge old ones."""

from __future__ import annotations

import contextlib
import itertools
import logging
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import Storage
from django.db import connection, transaction
from django.utils import timezone
from rq.timeouts import JobTimeoutException

# The module, not its names: the job calls back into this module.
from partners.dropzones.channels import channel_list, delivery_date
from partners.inbound.errors import InboundRejected
from partners.inbound.names import name_text_problem
from partners.inbound.queueing import registration_enqueue
from partners.inbound.registration import inbound_files_register
from partners.models import ChannelObject, InboundChannel, InboundFile
from partners.storage import (
    STORAGE_ERRORS,
    UPLOAD_STORAGE,
    ListedObject,
    StorageReadError,
    StorageRefused,
    StoredFile,
    channel_storage,
    channel_storage_alias,
    storage_delete,
    storage_get,
    storage_opened,
)
from partners.storage.base import path_steps_refusal

logger = logging.getLogger(__name__)
_POLL_LOCK = 0x53325350  # "S2SP": the advisory-lock namespace of channel polls


@dataclass
class PollResult:
    channel_id: int
    skipped: bool = False  # another poller had the channel
    listed: int = 0
    new: int = 0
    registered: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        if self.skipped:
            return "skipped: another poller is on this channel"
        text = (
            f"{self.listed} listed, {self.new} new, {len(self.registered)} registered,"
            f" {len(self.rejected)} rejected"
        )
        if self.unreadable:
            text += f", {len(self.unreadable)} unreadable (tried again next poll)"
        return text


def inbound_poll(*, channel: InboundChannel) -> PollResult:
    """Look at the channel once: note new files, register those whose size held still since
    the previous poll (each exactly once), reject misplaced or wrongly named ones with the
    reason (the partner sees it in *My files*).

    Safe with several pollers at once (several hosts, a cron and a manual run): a poll holds
    the channel's advisory lock for its transaction, and another poll skips the channel.
    """
    result = PollResult(channel_id=channel.pk)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_POLL_LOCK, channel.pk])
            row = cursor.fetchone()
        if not row or not row[0]:
            result.skipped = True
            return result
        with storage_opened(channel_storage(channel)) as storage:
            _poll_listing(channel, storage, result)
    return result


# Listed objects looked up in the history at once: one query per this many names.
_HISTORY_CHUNK = 1000


def _poll_listing(channel: InboundChannel, storage: Storage, result: PollResult) -> None:
    now = timezone.now()
    # The partner's outbound folders in this channel hold our own exports, not deliveries.
    outbound = tuple(
        f"{destination.delivery_folder}/"
        for destination in channel.destinations.select_related("partner")
    )
    listing = (
        listed
        for listed in channel_list(channel, storage)
        if not (outbound and listed.path.startswith(outbound))
    )
    listed_paths: set[str] = set()
    # The history is asked about the names listed now, a chunk at a time: a poll costs what
    # the listing holds, never what the channel ever held (its objects stay for good).
    while chunk := list(itertools.islice(listing, _HISTORY_CHUNK)):
        latest, versions = _history(channel, {_storable_path(listed.path) for listed in chunk})
        for listed in chunk:
            result.listed += 1
            listed_paths.add(_storable_path(listed.path))
            try:
                # One object's failure rolls back its own rows only, never the whole poll: a
                # name the database cannot hold must not keep the good files beside it out.
                with transaction.atomic():
                    _poll_object(channel, listed, latest, versions, now, result)
            except Exception:
                logger.exception("channel %s: %r could not be registered", channel.pk, listed.path)
                result.unreadable.append((_storable_path(listed.path), "could not be registered"))
    # A file seen and gone before it was taken (a client's x.filepart, renamed) is no longer
    # waiting: *My files* must not say so for ever. Under its new name it is a new object.
    # (Only the files still waiting are read: an object seen is the newest of its path.)
    waiting = ChannelObject.objects.filter(channel=channel, state=ChannelObject.State.SEEN)
    vanished = [pk for pk, path in waiting.values_list("pk", "path") if path not in listed_paths]
    ChannelObject.objects.filter(pk__in=vanished, state=ChannelObject.State.SEEN).delete()
    channel.last_polled_at = now
    channel.last_poll_result = result.summary()
    channel.save(update_fields=["last_polled_at", "last_poll_result"])


def _history(
    channel: InboundChannel, paths: set[str]
) -> tuple[dict[str, ChannelObject], set[tuple[str, str]]]:
    """What the channel saw before at ``paths``: the newest object of each path, and every
    (path, version) taken or refused (an index scan of channelobject_once per name)."""
    latest: dict[str, ChannelObject] = {}
    versions: set[tuple[str, str]] = set()
    seen = ChannelObject.objects.filter(channel=channel, path__in=paths).order_by("path", "pk")
    for known in seen:
        latest[known.path] = known  # the newest row per path wins
        versions.add((known.path, known.version))
    return latest, versions


def _storable_path(path: str) -> str:
    """``path`` as text the database can hold: bytes that are not UTF-8 shown as ``\\xff``,
    NUL as ``\\x00``, cut to the column's length. Only rejected objects need it."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= 1000 else text[:999] + "…"


def _poll_object(
    channel: InboundChannel,
    listed: ListedObject,
    latest: dict[str, ChannelObject],
    versions: set[tuple[str, str]],
    now: datetime,
    result: PollResult,
) -> None:
    path = _storable_path(listed.path)
    known = latest.get(path)
    refusal = listed.refusal or path_steps_refusal(listed.path)
    if refusal:
        _refuse(channel, listed, refusal, known=known, versions=versions, now=now, result=result)
    elif known is not None and known.state == ChannelObject.State.SEEN:
        if (known.version, known.size) == (listed.version, listed.size):
            _register(channel, known, result)
        else:  # still being written: it goes once it holds between two polls
            known.version, known.size = listed.version, listed.size
        known.last_seen_at = now
        known.save()
    elif (path, listed.version) not in versions:
        # New, or replaced by new content after it was taken: it goes next poll if it
        # holds (the same content again is a duplicate there, by name and SHA-256).
        seen = _seen_create(channel, listed, path, now, result)
        problem = name_text_problem(posixpath.basename(listed.path))
        if path != listed.path or problem:
            # A name that is not even text (or too long to keep) cannot become a delivery:
            # said at once, with its name as the database can show it.
            _reject(channel, seen, problem or "the name is too long", result)
            seen.save()


def _seen_create(
    channel: InboundChannel, listed: ListedObject, path: str, now: datetime, result: PollResult
) -> ChannelObject:
    """The first sight of an object (or of its new content): noted, and counted as new."""
    result.new += 1
    return ChannelObject.objects.create(
        channel=channel,
        path=path,
        version=listed.version[:200],
        size=listed.size,
        first_seen_at=now,
        last_seen_at=now,
    )


def _refuse(
    channel: InboundChannel,
    listed: ListedObject,
    reason: str,
    *,
    known: ChannelObject | None,
    versions: set[tuple[str, str]],
    now: datetime,
    result: PollResult,
) -> None:
    """An entry that is not a plain file of the folder (a link, a FIFO, a key that climbs
    out): rejected with ``reason`` once, never read. A file seen before and made such an
    entry since is that same object, rejected (it does not stay *seen*)."""
    path = _storable_path(listed.path)
    if known is not None and known.state == ChannelObject.State.SEEN:
        known.version, known.size, known.last_seen_at = listed.version[:200], listed.size, now
        _reject(channel, known, reason, result)
        known.save()
    elif (path, listed.version[:200]) not in versions:
        seen = _seen_create(channel, listed, path, now, result)
        _reject(channel, seen, reason, result)
        seen.save()


def _register(channel: InboundChannel, seen: ChannelObject, result: PollResult) -> None:
    name = posixpath.basename(seen.path)
    alias = channel_storage_alias(channel)
    problem = None
    if delivery_date(seen.path, channel.partner.slug) is None:
        problem = (
            f"put files in {channel.partner.slug}/date=YYYY-MM-DD/ (SPEC §3.1), not in"
            f" {posixpath.dirname(seen.path) or 'the top folder'}"
        )
    stored = StoredFile(name=name, storage=alias, path=seen.path, size=seen.size)
    try:
        if problem:
            raise InboundRejected(name, problem)
        with transaction.atomic():
            registration = inbound_files_register(
                files=[stored],
                partner=channel.partner,
                complete=False,
                via=InboundFile.Via.DROPZONE,
            )
            registration_enqueue(registration)
    except InboundRejected as exc:
        _reject(channel, seen, exc.reason, result)
        return
    except StorageReadError as exc:
        result.unreadable.append((seen.path, str(exc)))
        return
    seen.file = InboundFile.objects.filter(storage=alias, path=seen.path).latest("pk")
    seen.state = ChannelObject.State.REGISTERED
    result.registered.append(seen.path)


def _reject(channel: InboundChannel, seen: ChannelObject, reason: str, result: PollResult) -> None:
    """Refuse a listed object with ``reason``: the partner sees it in *My files*."""
    seen.file = InboundFile.objects.create(
        partner=channel.partner,
        name=posixpath.basename(seen.path)[:255],
        storage=channel_storage_alias(channel),
        path=seen.path,
        via=InboundFile.Via.DROPZONE,
        size=seen.size,
        sha256="",
        status=InboundFile.Status.REJECTED,
        error=reason,
    )
    seen.state = ChannelObject.State.REJECTED
    result.rejected.append((seen.path, reason))


def inbound_channel_poll(*, channel_id: int) -> PollResult | None:
    """Poll one channel (None: it is gone). A poll that fails (the server unreachable or
    silent past ``DROPZONE_*_TIMEOUT``, stopped by RQ's job timeout, refused credentials)
    is recorded on the channel with the reason and tried again at the next poll."""
    channel = InboundChannel.objects.select_related("partner").filter(pk=channel_id).first()
    if channel is None:
        return None
    try:
        return inbound_poll(channel=channel)
    except Exception as exc:  # JobTimeoutException included: RQ stopped a poll that hung
        logger.exception("polling channel %s failed", channel.pk)
        reason = _poll_failure(exc)
        InboundChannel.objects.filter(pk=channel.pk).update(
            last_polled_at=timezone.now(), last_poll_result=f"failed: {reason}"
        )
        return PollResult(channel_id=channel.pk, unreadable=[("", reason)])


def _poll_failure(exc: Exception) -> str:
    """Why a poll failed, in words staff can act on (a timeout's own text is empty)."""
    if isinstance(exc, JobTimeoutException):
        return (
            f"stopped after {settings.INBOUND_POLL_JOB_TIMEOUT} s (INBOUND_POLL_JOB_TIMEOUT);"
            " tried again at the next poll"
        )
    if isinstance(exc, TimeoutError) and not str(exc):  # a read's (socket.timeout)
        return (
            f"the server did not answer for {settings.DROPZONE_READ_TIMEOUT:g} s"
            " (DROPZONE_READ_TIMEOUT); tried again at the next poll"
        )
    return str(exc) or type(exc).__name__


@dataclass
class PurgeResult:
    deleted: int = 0
    missing: int = 0
    unclaimed: int = 0  # checked in the portal, never processed
    refused: int = 0  # a link on its way now: left alone
    # (path, why): no longer a file where it was stored (a folder in its place, a file in
    # place of a folder on its way); nothing of ours is left there to delete, so left alone.
    not_files: list[tuple[str, str]] = field(default_factory=list)
    # (path, why): the storage failed (unreachable, permission denied): tried again next time.
    failed: list[tuple[str, str]] = field(default_factory=list)


# Why a stored path is no longer a file, in words for staff reading the purge's summary.
FOLDER_IN_ITS_PLACE = "a folder stands where the file was"
FILE_ON_ITS_WAY = "a folder on its way is now a file"


def inbound_purge(*, now: datetime | None = None) -> PurgeResult:
    """Delete delivered files older than ``INBOUND_RETENTION_DAYS`` from the drop zones and
    the upload storage (SPEC §3.6); their records (files, batches, receipts) stay, marked.
    One file that cannot be deleted never stops the others: it is counted with its reason
    (and logged), and tried again at the next purge when the storage itself failed."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.INBOUND_RETENTION_DAYS)
    result = PurgeResult()
    old = (
        InboundFile.objects.filter(received_at__lt=cutoff, purged_at__isnull=True)
        .exclude(storage="")
        .order_by("pk")
    )
    opened: dict[str, Storage | str] = {}  # one connection per drop zone; or why none
    with contextlib.ExitStack() as stack:
        for file in old.iterator():
            if file.storage not in opened:
                try:
                    opened[file.storage] = stack.enter_context(
                        storage_opened(storage_get(file.storage))
                    )
                except InboundChannel.DoesNotExist:
                    opened[file.storage] = "its drop-zone channel no longer exists"
                except STORAGE_ERRORS as exc:
                    opened[file.storage] = f"its storage cannot be reached ({exc})"
            storage = opened[file.storage]
            if isinstance(storage, str):
                _purge_failed(result, file.path, storage)
                continue
            if _inbound_file_delete(result, storage, file.path):
                InboundFile.objects.filter(pk=file.pk).update(purged_at=now)
                ChannelObject.objects.filter(file=file).update(state=ChannelObject.State.PURGED)
    result.unclaimed = _unclaimed_uploads_purge(cutoff, result)
    return result


def _inbound_file_delete(result: PurgeResult, storage: Storage, path: str) -> bool:
    """Delete one delivered file and count how it went; False when it is to be tried again
    (the storage failed), True when there is nothing more to do."""
    try:  # the entry itself: never through a link on its way, nor a normalized key
        if storage_delete(storage, path):
            result.deleted += 1
        else:
            result.missing += 1
    except StorageRefused as exc:
        logger.warning("purge: %r not deleted: %s", path, exc)
        result.refused += 1
    except IsADirectoryError:  # never a folder: it is not ours (nor, maybe, empty)
        logger.warning("purge: %r left alone: %s", path, FOLDER_IN_ITS_PLACE)
        result.not_files.append((path, FOLDER_IN_ITS_PLACE))
    except NotADirectoryError:  # the file cannot be there any more
        logger.warning("purge: %r left alone: %s", path, FILE_ON_ITS_WAY)
        result.not_files.append((path, FILE_ON_ITS_WAY))
    except STORAGE_ERRORS as exc:
        _purge_failed(result, path, f"{type(exc).__name__}: {exc}")
        return False
    return True


def _purge_failed(result: PurgeResult, path: str, why: str) -> None:
    logger.warning("purge: %r not deleted, tried again at the next purge: %s", path, why)
    result.failed.append((path, why))


def _unclaimed_uploads_purge(cutoff: datetime, result: PurgeResult) -> int:
    """Files uploaded to be checked and never processed: uploads/<PID>/<token>/<name>. What
    cannot be listed or deleted is counted in ``result.failed``, the others still go."""
    storage = storage_get(UPLOAD_STORAGE)
    claimed = set(InboundFile.objects.filter(storage=UPLOAD_STORAGE).values_list("path", flat=True))
    deleted = 0
    try:
        partners, _ = storage.listdir("uploads")
    except FileNotFoundError:  # nothing was ever uploaded here
        return 0
    for partner in partners:
        try:
            tokens, _ = storage.listdir(f"uploads/{partner}")
        except STORAGE_ERRORS as exc:
            _purge_failed(result, f"uploads/{partner}", f"{type(exc).__name__}: {exc}")
            continue
        for token in tokens:
            folder = f"uploads/{partner}/{token}"
            try:
                _, names = storage.listdir(folder)
            except STORAGE_ERRORS as exc:
                _purge_failed(result, folder, f"{type(exc).__name__}: {exc}")
                continue
            for name in names:
                path = f"{folder}/{name}"
                try:
                    if path not in claimed and storage.get_modified_time(path) < cutoff:
                        storage.delete(path)
                        deleted += 1
                except FileNotFoundError:  # gone meanwhile
                    continue
                except STORAGE_ERRORS as exc:
                    _purge_failed(result, path, f"{type(exc).__name__}: {exc}")
    return deleted
