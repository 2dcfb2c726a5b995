"""Inbound batches: register delivered files, process a batch, all or nothing."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import django_rq
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from rq import Callback, Retry
from rq.job import Dependency

from partners.idsync.files import idsync_batch_apply
from partners.inbound.apply import ApplyResult, apply_staged_batch, line_errors_store
from partners.inbound.lines import DEVICE_ID_TYPES
from partners.inbound.matching import CatalogTrait, TraitCatalog
from partners.inbound.names import (
    FileKind,
    FileNameError,
    InboundFileName,
    parse_inbound_file_name,
    parts_missing,
)
from partners.inbound.parse import (
    IDSource,
    LineContext,
    ParseTally,
    line_parse_pool,
    staged_line_text,
)
from partners.inbound.parts import part_tables_create, staged_parts_drop, staged_parts_take
from partners.inbound.sources import UnreadableFileError
from partners.inbound.stage import (
    LINE_COLUMNS,
    Progress,
    batch_relations_drop,
    files_stage,
    staging_create,
)
from partners.models import (
    DataSource,
    InboundBatch,
    InboundFile,
    Partner,
    Receipt,
    StagedPart,
)
from partners.receipts.alerts import receipt_failure_alert
from partners.receipts.services import receipt_delivery_request
from partners.storage import LOCAL, StoredFile, stored_file_open
from segments.membership import segment_memberships_refresh
from segments.models import Trait
from segments.rules import parse_trait_rule

ALREADY_PROCESSED = "already processed (same name and content)"
PROCESSING_FAILED = (
    "the processing failed on our side, several times; nothing of the batch was applied."
    " Our team has been told: send the file again, or wait for them to contact you"
)


class InboundRejected(Exception):
    """A file or batch that cannot be processed at all; nothing was changed."""

    def __init__(self, name: str, reason: str) -> None:
        # A batch's reason may name its file already (the batch's key is the file name, or
        # the part's name starts with it): the name is said once.
        super().__init__(reason if reason.startswith(name) else f"{name}: {reason}")
        self.name = name
        self.reason = reason


# The states a batch ends in: nothing more happens to it.
INBOUND_BATCH_ENDED = (
    InboundBatch.Status.PROCESSED,
    InboundBatch.Status.FAILED,
    InboundBatch.Status.DUPLICATE,
)


@dataclass(frozen=True)
class Registration:
    batches: list[InboundBatch]  # complete: to be queued
    duplicates: list[InboundFile]
    waiting: list[InboundBatch] = field(default_factory=list)  # split parts: more may come


def _sha256(delivery: StoredFile) -> str:
    """Read through once (a stream). A file that cannot be read raises StorageReadError: it
    may be a passing network fault, so the caller decides (a poller tries again later)."""
    with stored_file_open(delivery.storage, delivery.path) as stream:
        digest = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()


def _data_source(dpid: int, name: str) -> DataSource:
    source = DataSource.objects.select_related("partner").filter(dpid=dpid).first()
    if source is None:
        raise InboundRejected(name, f"DPID {dpid} is not a data source we know")
    if not source.active:
        raise InboundRejected(name, f"data source {dpid} is not active")
    return source


def _may_use(partner: Partner, source: DataSource) -> bool:
    return source.partner_id == partner.pk or source.shared_with.filter(pk=partner.pk).exists()


def traits_name_check(
    parsed: InboundFileName, partner: Partner | None
) -> tuple[Partner, DataSource, DataSource]:
    """The (partner, ID data source, target data source) of a trait file, or why not."""
    name = parsed.name
    ids = _data_source(parsed.dpid, name)
    if parsed.kind is FileKind.DEVICE_TRAITS:
        target = ids  # ftp_dpm_odc_<DPID>: the DPID is the target; IDs are idfa / gaid
    elif ids.is_global:
        if parsed.target_dpid is None:
            raise InboundRejected(
                name,
                f"DPID {parsed.dpid} is a global device data source: the name needs a target "
                f"DPID (ftp_dpm_{parsed.dpid}_<TARGET_DPID>_<TIMESTAMP>.sync)",
            )
        target = _data_source(parsed.target_dpid, name)
    else:
        target = _data_source(parsed.trait_dpid, name)
    if target.is_global:
        raise InboundRejected(name, f"the target DPID {target.dpid} is a global device data source")
    owner = partner or target.partner
    assert owner is not None
    if not _may_use(owner, target):
        raise InboundRejected(name, f"data source {target.dpid} belongs to another partner")
    if not ids.is_global and not _may_use(owner, ids):
        raise InboundRejected(name, f"data source {ids.dpid} belongs to another partner")
    return owner, ids, target


def idsync_name_check(
    parsed: InboundFileName, partner: Partner | None
) -> tuple[Partner, DataSource | None, DataSource]:
    name = parsed.name
    sources = [_data_source(dpid, name) for dpid in parsed.column_dpids if dpid != 0]
    mapped = [s for s in sources if not s.is_global]
    if not mapped:
        raise InboundRejected(name, "an ID-sync file maps at least one partner data source")
    owner = partner or mapped[-1].partner
    assert owner is not None
    for source in mapped:
        if not _may_use(owner, source):
            raise InboundRejected(name, f"data source {source.dpid} belongs to another partner")
    master = None if parsed.dpid == 0 else sources[0]
    return owner, master, mapped[-1]


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
    checked: list[tuple[StoredFile, InboundFileName, Partner, DataSource | None, DataSource]] = []
    for delivery in deliveries:
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
        checked.append((delivery, parsed, owner, ids, target))

    groups: dict[
        tuple[int, str],
        list[tuple[StoredFile, InboundFileName, Partner, DataSource | None, DataSource]],
    ] = defaultdict(list)
    for entry in checked:
        groups[(entry[2].pk, entry[1].batch_key)].append(entry)

    batches: list[InboundBatch] = []
    waiting: list[InboundBatch] = []
    duplicates: list[InboundFile] = []
    with transaction.atomic():
        for (_, key), entries in groups.items():
            entries.sort(key=lambda e: (e[1].split or 0, e[1].name))
            _, first, owner, ids, target = entries[0]
            fields = {
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
                # Two parts arriving at once meet here: the partial unique constraint lets
                # only one waiting batch exist per name, and get_or_create re-reads it.
                batch, _ = InboundBatch.objects.get_or_create(
                    partner=owner, key=key, status=InboundBatch.Status.WAITING, defaults=fields
                )
            fresh = 0
            for delivery, parsed, _, _, _ in entries:
                sha = delivery.sha256 or _sha256(delivery)
                seen = InboundFile.objects.filter(
                    name=parsed.name, sha256=sha, status=InboundFile.Status.PROCESSED
                ).exists()
                file = InboundFile.objects.create(
                    batch=None if seen else batch,
                    partner=owner,
                    name=parsed.name,
                    split=parsed.split,
                    storage=delivery.storage,
                    path=delivery.path,
                    via=via,
                    size=delivery.size,
                    sha256=sha,
                    status=InboundFile.Status.DUPLICATE if seen else InboundFile.Status.RECEIVED,
                    error=ALREADY_PROCESSED if seen else "",
                )
                if seen:
                    duplicates.append(file)
                else:
                    fresh += 1
            if batch.status == InboundBatch.Status.WAITING:
                if fresh and batch not in waiting:
                    waiting.append(batch)
                elif not batch.files.exists():
                    batch.delete()
            elif fresh:
                batches.append(batch)
            else:
                batch.delete()
    return Registration(batches, duplicates, waiting)


def registration_enqueue(registration: Registration) -> None:
    """Once the current transaction commits: queue the registration's complete batches, and
    look at its waiting ones again when the wait for more parts may be over."""
    for batch in registration.batches:
        _batch_enqueue_on_commit(batch)
    if registration.waiting:
        # enqueue_in ignores django-rq's commit mode: hold it until the commit ourselves.
        transaction.on_commit(_release_check_schedule, robust=True)


def _batch_enqueue_on_commit(batch: InboundBatch) -> None:
    """Queue ``batch`` once the current transaction commits. Robust: with Redis unreachable
    the delivery is still received (committed, queued) and the sweep
    (:func:`partners.inbound.sweep.inbound_batches_sweep`) queues it once Redis is back."""

    def enqueue() -> None:  # a function, not a partial: Django logs a failure by its name
        inbound_batch_enqueue(batch=batch)

    transaction.on_commit(enqueue, robust=True)


def _release_check_schedule() -> None:
    django_rq.get_queue("inbound").enqueue_in(
        timedelta(seconds=settings.INBOUND_PARTS_SETTLE_SECONDS + 1),
        "partners.inbound.jobs.inbound_waiting_batches_release_job",
        description="Queue the split batches whose parts are all here",
    )


def inbound_waiting_batches_release(*, now: datetime | None = None) -> list[InboundBatch]:
    """Queue the waiting batches of split parts that are ready (SPEC §3.6), and return them.

    A batch is ready once no part arrived for ``INBOUND_PARTS_SETTLE_SECONDS`` and its parts
    run from the first (0 or 1) to the highest without a gap; or, gaps or not, once it has
    waited ``INBOUND_PARTS_MAX_WAIT_SECONDS``: it is then processed with the parts it has,
    and its receipt names the missing ones. Safe to run from several places at once.
    """
    now = now or timezone.now()
    settle = timedelta(seconds=settings.INBOUND_PARTS_SETTLE_SECONDS)
    max_wait = timedelta(seconds=settings.INBOUND_PARTS_MAX_WAIT_SECONDS)
    released: list[InboundBatch] = []
    with transaction.atomic():
        waiting = InboundBatch.objects.filter(status=InboundBatch.Status.WAITING)
        for batch in waiting.select_for_update(skip_locked=True):
            parts = list(batch.files.values_list("split", "received_at"))
            if not parts:
                continue
            last = max(received for _, received in parts)
            missing = parts_missing([split or 0 for split, _ in parts])
            if now - last < settle or (missing and now - batch.created_at < max_wait):
                continue
            batch.status = InboundBatch.Status.QUEUED
            batch.missing_parts = ", ".join(str(number) for number in missing)
            batch.save(update_fields=["status", "missing_parts"])
            _batch_enqueue_on_commit(batch)
            released.append(batch)
    return released


def inbound_batch_job_id(batch_id: int) -> str:
    return f"inbound-batch-{batch_id}"


def inbound_part_job_id(batch_id: int, file_id: int) -> str:
    return f"inbound-batch-{batch_id}-part-{file_id}"


def parts_in_parallel(batch: InboundBatch) -> bool:
    """Whether the batch's parts are parsed by jobs of their own: a trait batch of several
    parts, big enough (``INBOUND_PART_JOBS_MIN_BYTES``) for the extra jobs to pay."""
    if batch.kind == InboundBatch.Kind.ID_SYNC:
        return False
    sizes = list(batch.files.values_list("size", flat=True))
    return len(sizes) > 1 and sum(sizes) >= settings.INBOUND_PART_JOBS_MIN_BYTES


def inbound_batch_enqueue(*, batch: InboundBatch) -> None:
    """Queue the batch for RQ workers (once the current transaction commits).

    One job per batch (the job ID is the batch's), on the ``inbound`` queue, with RQ's own
    retries: a worker that dies mid-batch leaves no trace in the database, and the retry
    (found by a live worker's maintenance pass) processes the batch from the start.

    The parts of a big split batch (:func:`parts_in_parallel`) first get a job each, which
    any worker takes (:func:`inbound_part_stage`); the batch job depends on them (RQ's own
    dependencies) and applies the whole batch, atomically, once they are done. A part job
    that failed for good does not hold the batch: the batch job parses that part itself.
    """
    queue = django_rq.get_queue("inbound")
    retry = Retry(max=settings.INBOUND_RETRY_MAX, interval=settings.INBOUND_RETRY_INTERVALS)
    depends_on = None
    if parts_in_parallel(batch):
        part_jobs = []
        for file_id, name in batch.files.order_by("split", "name").values_list("pk", "name"):
            part_jobs.append(inbound_part_job_id(batch.pk, file_id))
            queue.enqueue(
                "partners.inbound.jobs.inbound_part_stage_job",
                file_id,
                job_id=part_jobs[-1],
                job_timeout=settings.INBOUND_JOB_TIMEOUT,
                retry=retry,
                description=f"Parse part {name} of inbound batch #{batch.pk}",
            )
        depends_on = Dependency(jobs=part_jobs, allow_failure=True)
    queue.enqueue(
        "partners.inbound.jobs.inbound_batch_process_job",
        batch.pk,
        job_id=inbound_batch_job_id(batch.pk),
        job_timeout=settings.INBOUND_JOB_TIMEOUT,
        retry=retry,
        # Once RQ gives up (no retry left, or abandoned for good), the batch fails with a
        # receipt instead of staying "processing".
        on_failure=Callback("partners.inbound.jobs.inbound_batch_job_failed"),
        depends_on=depends_on,
        description=f"Process inbound batch {batch.key} (#{batch.pk})",
    )


def trait_catalog_load(target: DataSource) -> TraitCatalog:
    traits = [
        CatalogTrait(
            sid=sid,
            dpid=dpid,
            onboarded=kind == Trait.Kind.ONBOARDED,
            rule=parse_trait_rule(rule) if rule and dpid == target.dpid else None,
        )
        for sid, dpid, kind, rule in Trait.objects.values_list(
            "sid", "data_source_id", "kind", "rule"
        )
    ]
    return TraitCatalog(target_dpid=target.dpid, traits=traits)


def id_source_of(source: DataSource) -> IDSource:
    return IDSource(source.dpid, source.inbound_id_type, source.device_id_format)


def batch_line_context(batch: InboundBatch, *, file_no: int) -> LineContext:
    """How the lines of the batch's ``file_no``-th file are read."""
    assert batch.data_source is not None
    return LineContext(
        file_no=file_no,
        device_file=batch.kind == InboundBatch.Kind.DEVICE_TRAITS,
        id_source=id_source_of(batch.data_source),
        device_sources={
            source.dpid: id_source_of(source)
            for source in DataSource.objects.filter(dpid__in=DEVICE_ID_TYPES.values())
        },
        overwrite=batch.overwrite,
    )


def inbound_batch_process(*, batch_id: int, progress: Progress | None = None) -> Receipt:
    """Process a batch (trait files or ID-sync files), all or nothing; return its receipt.

    Safe to run twice: a processed batch returns its receipt, and a run that dies midway
    (even SIGKILL) rolls back entirely, so the next run starts from the old state.
    ``progress`` hears how far the batch is, in percent (the batch's rows are locked and
    uncommitted until the end, so it is told outside the database).
    """
    batch = InboundBatch.objects.select_related("data_source", "target").get(pk=batch_id)
    if batch.status == InboundBatch.Status.PROCESSED:
        return batch.receipt
    if batch.status in INBOUND_BATCH_ENDED:  # failed or a duplicate: it has ended
        raise InboundRejected(batch.key, batch.error or ALREADY_PROCESSED)
    started = timezone.now()
    InboundBatch.objects.filter(pk=batch.pk).update(
        status=InboundBatch.Status.PROCESSING, started_at=started, error=""
    )
    try:
        with transaction.atomic():
            # One batch of a data source at a time: lock its target data source row.
            DataSource.objects.select_for_update().get(pk=batch.target_id)
            batch = InboundBatch.objects.select_for_update().get(pk=batch.pk)
            if batch.status == InboundBatch.Status.PROCESSED:
                return batch.receipt
            if _processed_before_set_aside(batch):
                apply = (
                    idsync_batch_apply
                    if batch.kind == InboundBatch.Kind.ID_SYNC
                    else _process_traits
                )
                receipt = apply(batch, started=started, progress=progress)
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


def inbound_part_stage(*, file_id: int) -> StagedPart | None:
    """Parse one part of a batch into its own tables, ahead of the batch (see
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
    files = list(batch.files.order_by("split", "name"))
    file_no = [f.pk for f in files].index(file.pk)
    catalog = trait_catalog_load(batch.target)
    tally = ParseTally()
    try:
        with transaction.atomic():
            lines_table, errors_table = part_tables_create(file.pk)
            _trait_files_stage(
                batch,
                files,
                skip={n for n in range(len(files)) if n != file_no},
                catalog=catalog,
                tally=tally,
                table=lines_table,
                errors_table=errors_table,
            )
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {lines_table}")
                row = cursor.fetchone()
            return StagedPart.objects.create(
                file=file,
                lines=row[0] if row else 0,
                received=tally.received,
                rejected=tally.rejected,
            )
    except UnreadableFileError as exc:
        inbound_batch_fail(batch_id=batch.pk, reason=str(exc))
        raise InboundRejected(file.name, str(exc)) from exc


def _trait_files_stage(
    batch: InboundBatch,
    files: list[InboundFile],
    *,
    skip: set[int],
    catalog: TraitCatalog,
    tally: ParseTally,
    table: str,
    errors_table: str,
    progress: Progress | None = None,
    stream_wrap: Callable[[IO[bytes]], IO[bytes]] | None = None,
) -> None:
    """Parse the batch's trait files (all but the numbers in ``skip``) into ``table``."""
    # A big batch is parsed by several processes while this one feeds COPY; the start of a
    # file that a check reads is not worth starting them.
    size = sum(f.size for n, f in enumerate(files) if n not in skip)
    processes = (
        settings.INBOUND_PARSE_PROCESSES
        if size >= settings.INBOUND_PARALLEL_MIN_BYTES and stream_wrap is None
        else 0
    )
    with line_parse_pool(catalog, processes=processes) as pool:
        files_stage(
            files,
            skip=skip,
            table=table,
            columns=LINE_COLUMNS,
            types=None,
            rows=lambda file_no, stream: staged_line_text(
                stream,
                context=batch_line_context(batch, file_no=file_no),
                catalog=catalog,
                tally=tally,
                pool=pool,
            ),
            tally=tally,
            errors_table=errors_table,
            progress=progress,
            stream_wrap=stream_wrap,
        )


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
        receipt = Receipt.objects.create(
            batch=batch, job_start=batch.started_at or now, job_end=now
        )
        receipt_delivery_request(receipt=receipt)
        return receipt


def _process_traits(
    batch: InboundBatch, *, started: datetime, progress: Progress | None = None
) -> Receipt:
    return trait_batch_apply(batch, started=started, progress=progress).receipt


@dataclass(frozen=True)
class TraitBatchResult:
    receipt: Receipt
    applied: ApplyResult


def trait_batch_apply(
    batch: InboundBatch,
    *,
    started: datetime,
    progress: Progress | None = None,
    check_stream: Callable[[IO[bytes]], IO[bytes]] | None = None,
) -> TraitBatchResult:
    """Apply a trait batch, inside the caller's transaction, and make its receipt.

    The check (*Check only*) runs this same code on the start of a file, read through
    ``check_stream``, and rolls it all back: its figures are processing's figures for the
    lines it read, by construction. A check also counts per trait and skips the segment
    membership refresh (no figure of the receipt depends on it)."""
    check = check_stream is not None
    files = list(batch.files.order_by("split", "name"))
    target = batch.target
    ids = batch.data_source
    assert ids is not None
    catalog = trait_catalog_load(target)
    now = int(timezone.now().timestamp())
    tally = ParseTally()
    staging_create()
    # Parts their own jobs parsed ahead are taken from their tables; the rest is parsed here.
    staged = staged_parts_take(files, tally=tally)
    _trait_files_stage(
        batch,
        files,
        skip={file_no for file_no, f in enumerate(files) if f.pk in staged},
        catalog=catalog,
        tally=tally,
        table="stage_line",
        errors_table="stage_error",
        progress=progress,
        stream_wrap=check_stream,
    )
    result = apply_staged_batch(
        batch_id=batch.pk,
        target_dpid=target.dpid,
        overwrite=batch.overwrite,
        platform_uuids=ids.inbound_id_type == DataSource.InboundIDType.UUID,
        keep_pending=ids.id_type == DataSource.IDType.CROSS_DEVICE,
        now=now,
        by_trait=check,
    )
    if progress:
        progress(90)
    if not check:
        segment_memberships_refresh(profiles_table="newmap", now=now)
    if progress:
        progress(95)
    sample = line_errors_store(
        batch_id=batch.pk, file_names=[f.name for f in files], target_dpid=target.dpid
    )
    batch_relations_drop()
    staged_parts_drop(staged.values())  # with the batch's commit, or not at all
    processed = tally.received - result.over_line_limit
    receipt = Receipt.objects.create(
        batch=batch,
        records_received=tally.received,
        format_errors=tally.rejected,
        invalid_ids=result.invalid_ids,
        no_matching_ids=result.no_matching_ids,
        no_trait_realized=result.no_trait_realized,
        records_processed=processed,
        stored_records=processed
        - tally.rejected
        - result.invalid_ids
        - result.no_matching_ids
        - result.no_trait_realized,
        total_devices=result.total_devices,
        total_signals=result.total_signals,
        total_unused_signals=result.total_unused_signals,
        total_realized_traits=result.total_realized_traits,
        total_removed_traits=result.total_removed_traits,
        total_traits_failed_validation=result.total_traits_failed_validation,
        total_users_with_failed_traits=result.total_users_with_failed_traits,
        over_line_limit=result.over_line_limit,
        pending_records=result.pending_records,
        job_start=started,
        job_end=timezone.now(),
        errors_sample=sample,
    )
    return TraitBatchResult(receipt, result)
