"""The partners app's models, one module per concern; every name is importable from
``partners.models`` as before (and migrations refer to the validators by that path)."""

from __future__ import annotations

from partners.models.channels import (
    CREDENTIALS_PREFIX,
    CREDENTIALS_REF,
    ChannelObject,
    InboundChannel,
    ScheduleRun,
)
from partners.models.idsync import (
    IDMapping,
    IDSyncOptOut,
)
from partners.models.inbound import (
    InboundBatch,
    InboundFile,
    StagedPart,
)
from partners.models.outbound import (
    Destination,
    DestinationSegment,
    OutboundFile,
    OutboundRun,
    _validate_file_name_template,
    _validate_outbound_folder,
    _validate_row_template,
    outbound_folder_refusal,
)
from partners.models.partners import (
    Partner,
    PartnerAPIToken,
    PartnerUser,
)
from partners.models.receipts import (
    LineError,
    PendingRecord,
    Receipt,
    ReceiptDelivery,
    ReceiptRecipient,
)
from partners.models.sources import (
    DataSource,
)

__all__ = [
    "CREDENTIALS_PREFIX",
    "CREDENTIALS_REF",
    "ChannelObject",
    "DataSource",
    "Destination",
    "DestinationSegment",
    "IDMapping",
    "IDSyncOptOut",
    "InboundBatch",
    "InboundChannel",
    "InboundFile",
    "LineError",
    "OutboundFile",
    "OutboundRun",
    "Partner",
    "PartnerAPIToken",
    "PartnerUser",
    "PendingRecord",
    "Receipt",
    "ReceiptDelivery",
    "ReceiptRecipient",
    "ScheduleRun",
    "StagedPart",
    "_validate_file_name_template",
    "_validate_outbound_folder",
    "_validate_row_template",
    "outbound_folder_refusal",
]
