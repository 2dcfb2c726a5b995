"""Trait batches (``ftp_dpm_…`` and legacy ``ftp_dpm_odc_…`` files): parse the files into
the staging tables (in parallel processes when big; parts of a big split batch by jobs of
their own, ahead), apply them set-based, and make the receipt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from partners.inbound.apply import ApplyResult, apply_staged_batch, line_errors_store
from partners.inbound.lines import DEVICE_ID_TYPES
from partners.inbound.matching import CatalogTrait, TraitCatalog
from partners.inbound.parse import (
    IDSource,
    LineContext,
    ParseTally,
    UserLineCounts,
    line_parse_pool,
    staged_line_text,
)
from partners.inbound.parts import part_tables_create, staged_parts_drop, staged_parts_take
from partners.inbound.stage import (
    LINE_COLUMNS,
    Progress,
    StreamWrap,
    batch_relations_drop,
    files_stage,
    staging_create,
)
from partners.models import DataSource, InboundBatch, InboundFile, Receipt, StagedPart
from partners.receipts.build import trait_receipt_create
from segments.membership import segment_memberships_refresh
from segments.models import Trait
from segments.rules import parse_trait_rule


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


def trait_part_stage(*, batch: InboundBatch, file: InboundFile) -> StagedPart:
    """Parse ``file``, one part of the trait ``batch``, into its own tables (committed: the
    batch job takes them). Raises UnreadableFileError for a part that cannot be read."""
    files = list(batch.files.order_by("split", "name"))
    file_no = [f.pk for f in files].index(file.pk)
    catalog = trait_catalog_load(batch.target)
    tally = ParseTally()
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
            over_limit=tally.over_limit,
        )


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
    stream_wrap: StreamWrap | None = None,
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
    user_lines = UserLineCounts()  # the batch's, when it is parsed in process
    with line_parse_pool(catalog, processes=processes) as pool:
        files_stage(
            files,
            skip=skip,
            table=table,
            columns=LINE_COLUMNS,
            types=None,
            rows=lambda file_no, stream, counts: staged_line_text(
                stream,
                context=batch_line_context(batch, file_no=file_no),
                catalog=catalog,
                tally=tally,
                pool=pool,
                user_lines=user_lines,
                counts=counts,
            ),
            tally=tally,
            errors_table=errors_table,
            progress=progress,
            stream_wrap=stream_wrap,
        )


def trait_batch_receipt(
    batch: InboundBatch, *, started: datetime, progress: Progress | None = None
) -> Receipt:
    """Apply a trait batch (the processing's entry point for this kind); its receipt."""
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
    check_stream: StreamWrap | None = None,
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
    # Lines over the per-user limit dropped while parsing: over it all the same.
    result.over_line_limit += tally.over_limit
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
    receipt = trait_receipt_create(
        batch=batch,
        received=tally.received,
        format_errors=tally.rejected,
        applied=result,
        started=started,
        errors_sample=sample,
    )
    return TraitBatchResult(receipt, result)
