"""What a partner put in its drop zone: the listing of its folder, and the layout a file must
be in (``<partner slug>/date=YYYY-MM-DD/<file name>``). The channel's storage itself is
:func:`partners.storage.channel_storage`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

from django.core.files.storage import Storage

from partners.models import InboundChannel
from partners.storage import ListedObject, storage_walk

_DATE_FOLDER = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")


def channel_list(channel: InboundChannel, storage: Storage) -> Iterator[ListedObject]:
    """Every file under the partner's folder of the channel (any depth; the layout is
    checked by the poller, which says what is wrong with a misplaced file)."""
    return storage_walk(storage, channel.partner.slug)


def delivery_date(path: str, slug: str) -> date | None:
    """The date of the ``date=YYYY-MM-DD`` folder a file is in (None: not in the layout)."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != slug:
        return None
    match = _DATE_FOLDER.fullmatch(parts[1])
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
