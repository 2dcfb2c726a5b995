"""Processing a batch, all or nothing: the one entry point for every kind of batch (trait
files, legacy device files, ID-sync files), which hands the batch to its kind's apply and
ends it with a receipt; and ending a batch that cannot be processed."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from partners.idsync.files import idsync_batch_apply
from partners.inbound.errors import ALREADY_PROCESSED, DataSourceBusy, InboundRejected
from partners.inbound.name_checks import idsync_name_check, traits_name_check
from partners.inbound.names import FileKind, parse_inbound_file_name
from partners.inbound.sources import UnreadableFileError
from partners.inbound.stage import Progress
from partners.inbound.traits import trait_batch_receipt, trait_part_stage
from partners.locks import INBOUND_TURN_LOCK, session_lock
from partners.models import InboundBatch, InboundFile, Receipt, StagedPart
from partners.receipts.alerts import receipt_failure_alert
from partners.receipts.build import failure_receipt_create
from partners.receipts.queueing import receipt_delivery_request

# The states a batch ends in: nothing more happens to it.
INBOUND_BATCH_ENDED = (
    InboundBatch.Status.PROCESSED,
    InboundBatch.Status.FAILED,
    InboundBatch.Status.DUPLICATE,
)

# How each kind of batch is applied, inside the batch's transaction; each makes its receipt.
BatchApply = Callable[..., Receipt]
BATCH_APPLY: dict[str, BatchApply] = {
    InboundBatch.Kind.TRAITS: trait_batch_receipt,
    InboundBatch.Kind.DEVICE_TRAITS: trait_batch_receipt,
    InboundBatch.Kind.ID_SYNC: idsync_batch_apply,
}


def inbound_batch_process(
    *, batch_id: int, progress: Progress | None = None, wait: bool = False
) -> Receipt:
    """Process a batch (trait files or ID-sync files), all or nothing; return its receipt.

    Safe to run twice: a processed batch returns its receipt, and a run that dies midway
    (even SIGKILL) rolls back entirely, so the next run starts from the old state.
    ``progress`` hears how far the batch is, in percent (the batch's rows are locked and
    uncommitted until the end, so it is told outside the database).

    One batch of a data source applies at a time. When another batch of the same data source
    is being applied, this one raises :class:`DataSourceBusy` at once and changes nothing
    (a worker never sits waiting on another batch's lock: the batch waits its turn, queued),
    or with ``wait`` (the ``ingest`` command) waits for it.
    """
    batch = InboundBatch.objects.select_related("data_source", "target", "partner").get(pk=batch_id)
    if batch.status == InboundBatch.Status.PROCESSED:
        return batch.receipt
    if batch.status in INBOUND_BATCH_ENDED:  # failed or a duplicate: it has ended
        raise InboundRejected(batch.key, batch.error or ALREADY_PROCESSED)
    try:
        _sender_still_allowed(batch)
    except InboundRejected as exc:
        inbound_batch_fail(batch_id=batch.pk, reason=exc.reason)
        raise
    # An advisory lock, not a lock on the data source's row: a row lock (FOR UPDATE) would
    # also stop everything that only references the data source (each new ID mapping of
    # /ibs: takes FOR KEY SHARE on it) for as long as the batch runs. Held for the session,
    # not the transaction, so the batch shows as processing while its transaction runs.
    with session_lock(INBOUND_TURN_LOCK, batch.target_id, wait=wait) as had:
        if not had:
            raise DataSourceBusy(batch.key)
        return _batch_apply(batch, progress)


def _sender_still_allowed(batch: InboundBatch) -> None:
    """Check the batch's file name again as its registration did (the data sources it names
    exist, are active, and are its partner's own or shared with it): staff may have
    deactivated a data source, or stopped sharing it, since the file came. Raises
    :class:`InboundRejected` with the same words as a refused upload; nothing is applied."""
    first = batch.files.order_by("split", "name").values_list("name", flat=True).first()
    if first is None:
        return
    parsed = parse_inbound_file_name(first)
    check = idsync_name_check if parsed.kind is FileKind.ID_SYNC else traits_name_check
    check(parsed, batch.partner)


def _batch_apply(batch: InboundBatch, progress: Progress | None) -> Receipt:
    started = timezone.now()
    InboundBatch.objects.filter(pk=batch.pk).update(
        status=InboundBatch.Status.PROCESSING, started_at=started, error=""
    )
    try:
        with transaction.atomic():
            batch = InboundBatch.objects.select_for_update().get(pk=batch.pk)
            if batch.status == InboundBatch.Status.PROCESSED:
                return batch.receipt
            if _processed_before_set_aside(batch):
                receipt = BATCH_APPLY[batch.kind](batch, started=started, progress=progress)
                receipt_delivery_request(receipt=receipt)  # e-mailed once the batch commits
                receipt_failure_alert(receipt=receipt)
                batch.files.update(status=InboundFile.Status.PROCESSED)
                InboundBatch.objects.filter(pk=batch.pk).update(
                    status=InboundBatch.Status.PROCESSED, finished_at=receipt.job_end
                )
                return receipt
    except UnreadableFileError as exc:
        inbound_batch_fail(batch_id=batch.pk, reason=str(exc))
        raise InboundRejected(batch.key, str(exc)) from exc
    raise InboundRejected(batch.key, ALREADY_PROCESSED)


def _processed_before_set_aside(batch: InboundBatch) -> bool:
    """Take out of the batch its files that another batch processed since they were
    registered (the same file delivered twice before either was processed); whether any
    file is left.
    A batch with none left is a duplicate. Runs under the target's lock, so the batch that
    went first is committed and seen."""
    copies = batch.files.filter(
        Exists(
            InboundFile.objects.filter(
                name=OuterRef("name"),
                sha256=OuterRef("sha256"),
                status=InboundFile.Status.PROCESSED,
            )
        )
    )
    # Out of the batch, as a duplicate found at registration is: the rest goes on without it.
    copies.update(batch=None, status=InboundFile.Status.DUPLICATE, error=ALREADY_PROCESSED)
    if batch.files.exists():
        return True
    InboundBatch.objects.filter(pk=batch.pk).update(
        status=InboundBatch.Status.DUPLICATE, finished_at=timezone.now()
    )
    return False


def inbound_batch_fail(*, batch_id: int, reason: str) -> Receipt | None:
    """End a batch that cannot be processed: failed, with ``reason`` (in the partner's
    words) on it and its files, and a receipt saying so, e-mailed like any other (nothing
    of the batch was applied). None when the batch is gone or had already ended."""
    with transaction.atomic():
        batch = InboundBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status in INBOUND_BATCH_ENDED:
            return None
        now = timezone.now()
        InboundBatch.objects.filter(pk=batch.pk).update(
            status=InboundBatch.Status.FAILED, error=reason, finished_at=now
        )
        batch.files.update(status=InboundFile.Status.FAILED, error=reason)
        receipt = failure_receipt_create(batch=batch, started=batch.started_at or now, ended=now)
        receipt_delivery_request(receipt=receipt)
        return receipt


def inbound_part_stage(*, file_id: int) -> StagedPart | None:
    """Parse one part of a big trait batch into its own tables, ahead of the batch (see
    :mod:`partners.inbound.parts`); None when there is nothing (left) to do. A part that
    cannot be read fails its batch, with the reason."""
    file = InboundFile.objects.filter(pk=file_id).first()
    batch = (
        InboundBatch.objects.select_related("data_source", "target").filter(files=file).first()
        if file is not None
        else None
    )
    if file is None or batch is None:
        return None
    if batch.status in INBOUND_BATCH_ENDED:
        return None
    existing = StagedPart.objects.filter(file=file).first()
    if existing is not None:
        return existing
    InboundBatch.objects.filter(pk=batch.pk, status=InboundBatch.Status.QUEUED).update(
        status=InboundBatch.Status.PROCESSING, started_at=timezone.now()
    )
    try:
        return trait_part_stage(batch=batch, file=file)
    except UnreadableFileError as exc:
        inbound_batch_fail(batch_id=batch.pk, reason=str(exc))
        raise InboundRejected(file.name, str(exc)) from exc
