"""What stops an inbound file or batch, in the partner's words: importable without the
processing machinery (views, the API and commands only need these)."""

from __future__ import annotations

ALREADY_PROCESSED = "already processed (same name and content)"
# A part of a split file sent again while its batch waits for the others.
PART_ALREADY_HERE = "this part is already here with the same content"
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


class DataSourceBusy(Exception):
    """Another batch of the same data source is being applied: this one waits its turn
    (nothing was changed; it is queued again when the batch ahead of it ends)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: waits for the batch of its data source being applied")
        self.key = key
