"""Delivering a run's part files to the destination's channel: each whole under its final
name, then the ``.info`` control file (SPEC §6); and clearing what a killed run left under
temporary names."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

from django.core.files.storage import Storage

from partners.models import Destination, OutboundFile, OutboundRun, outbound_folder_refusal
from partners.outbound.parts import Part, file_name_context, plain_file_name
from partners.outbound.templates import (
    Template,
    compile_file_name_template,
)
from partners.storage import channel_storage, storage_opened, storage_save_whole


class OutboundFolderRefused(ValueError):
    """A destination's folder that is not a plain folder under the partner's folder (stored
    before the rules, or written around the model)."""


def delivery_folder_checked(destination: Destination) -> str:
    """The destination's folder in its channel, once its folder is checked again (the run
    fails with the reason before anything is rendered or written)."""
    refusal = outbound_folder_refusal(destination.folder)
    if refusal:
        raise OutboundFolderRefused(
            f"nothing was delivered: the destination's folder {destination.folder!r} is"
            f" refused ({refusal})"
        )
    return destination.delivery_folder


def parts_deliver(
    destination: Destination,
    run: OutboundRun,
    name_template: Template,
    parts: list[Part],
    folder: Path,
) -> None:
    context = file_name_context(destination, mode=run.mode, moment=run.started_at)
    base = plain_file_name(name_template.render({**context, "SPLITNUM": ""}))
    suffix = ".gz" if destination.gzip and not base.endswith(".gz") else ""
    target = delivery_folder_checked(destination)
    entries = []
    with storage_opened(channel_storage(destination.channel)) as storage:
        for number, part in enumerate(parts, start=1):
            splitnum = f"{number:03d}" if len(parts) > 1 else ""
            name = plain_file_name(name_template.render({**context, "SPLITNUM": splitnum}) + suffix)
            delivered = part.path
            if destination.gzip:
                delivered = part.path.with_suffix(".gz")
                with part.path.open("rb") as plain, gzip.open(delivered, "wb") as packed:
                    shutil.copyfileobj(plain, packed, 1024 * 1024)
            size = delivered.stat().st_size
            digest = hashlib.md5(usedforsecurity=False)
            with delivered.open("rb") as stream:
                while chunk := stream.read(1024 * 1024):
                    digest.update(chunk)
            storage_save_whole(storage, f"{target}/{name}", delivered)
            OutboundFile.objects.create(
                run=run,
                name=name,
                sequence=number,
                lines=part.lines,
                bytes=size,
                md5=digest.hexdigest(),
            )
            entries.append(
                {
                    "FileName": name,
                    "FileSequenceNumber": number,
                    "FileLineCount": part.lines,
                    "FileByteSize": size,
                    "md5": digest.hexdigest(),
                }
            )
            run.lines += part.lines
            run.bytes += size
        info_name = plain_file_name(_stem(base) + ".info")
        info = folder / "control.info"
        info.write_text(
            json.dumps(
                {
                    "Files": entries,
                    "Totals": {
                        "FileName": info_name,
                        "TotalNumberFiles": len(entries),
                        "TotalNumberLines": run.lines,
                        "TotalByteSize": run.bytes,
                    },
                },
                indent=2,
            )
        )
        storage_save_whole(storage, f"{target}/{info_name}", info)  # after the data files
        run.info_name = info_name


def _stem(name: str) -> str:
    """The name without its extensions: ``s3_7_21_full_123.sync.gz`` -> ``s3_7_21_full_123``."""
    return name.split(".", 1)[0]


def killed_run_leftovers(destination: Destination, run: OutboundRun, storage: Storage) -> list[str]:
    """The names a killed ``run`` left under temporary names in the destination's folder:
    its data files' and its ``.info``'s (killed while writing either)."""
    # The run's names, whatever its SPLITNUM: what comes before and after it.
    context = file_name_context(destination, mode=run.mode, moment=run.started_at)
    template = compile_file_name_template(destination.file_name_template)
    head, _, tail = template.render({**context, "SPLITNUM": "\0"}).partition("\0")
    info = _stem(template.render({**context, "SPLITNUM": ""})) + ".info"
    try:
        _, names = storage.listdir(destination.delivery_folder)
    except FileNotFoundError:
        return []
    return [
        name
        for name in names
        if name == f"{info}.partial"
        or (
            name.endswith(".partial")
            and name.startswith(head)
            and name.removesuffix(".partial").removesuffix(".gz").endswith(tail)
        )
    ]
