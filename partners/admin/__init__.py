"""The partners app's admin, one module per concern (each registers its models)."""

from __future__ import annotations

from partners.admin import channels, idsync, inbound, outbound, partners, receipts, sources
from partners.admin.receipts import ResendForm

__all__ = [
    "ResendForm",
    "channels",
    "idsync",
    "inbound",
    "outbound",
    "partners",
    "receipts",
    "sources",
]
