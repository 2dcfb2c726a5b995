"""The demo taxonomy and users that `make demo` loads (through the taxonomy import service)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from openpyxl import Workbook

from partners.models import (
    DataSource,
    Destination,
    DestinationSegment,
    IDMapping,
    InboundChannel,
    Partner,
    PartnerUser,
)
from partners.taxonomy import taxonomy_import
from portal.demo_files import SEEDED_VISITORS, visitor_dpuuid, visitor_uuid
from segments.models import Profile

DEMO_TAXONOMY: dict[str, list[list[object]]] = {
    "Partners": [
        ["pid", "slug", "name", "contact_email", "receipts_enabled"],
        [1001, "acme", "Acme Data", "data-team@acme.example", True],
    ],
    "DataSources": [
        [
            "dpid",
            "partner_pid",
            "name",
            "id_type",
            "inbound_id_type",
            "integration_code",
            "redirect_hosts",
            "idsync_url_template",
        ],
        [
            21,
            1001,
            "Acme web visitors",
            "cookie",
            "dpuuid",
            "ACME_WEB",
            "acme.example,*.acme.example",
            "https://sync.acme.example/match?our_id=${DD_UUID}",
        ],
        [22, 1001, "Acme logged-in users", "cross_device", "dpuuid", "ACME_XD", "", ""],
    ],
    "ReceiptRecipients": [
        ["partner_pid", "email", "dpid"],
        [1001, "receipts@acme.example", None],
        [1001, "crm-team@acme.example", 22],
    ],
    "Traits": [
        ["sid", "dpid", "name", "kind", "rule", "ttl_days", "integration_code"],
        [10, 21, "Auto intenders", "onboarded", "", 120, "AUTO"],
        [11, 21, "Sports fans", "onboarded", 'sport == "football" OR sport == "tennis"', 120, ""],
        [12, 21, "Age 30 to 49", "onboarded", "age >= 30 AND age < 50", 60, ""],
        [13, 21, "Premium customers", "onboarded", 'ic == "ACME_PREMIUM"', 0, "ACME_PREMIUM"],
        [90, 22, "Newsletter subscribers", "onboarded", "", 365, ""],
    ],
    "Segments": [
        ["sid", "dpid", "name", "rule", "status"],
        [500, 21, "Sporty auto intenders", "10T AND 11T", "active"],
        [501, 21, "Recent auto or 30-49", "[10T,12T] <= 30D", "active"],
        [502, 21, "Fans and premium, not subscribed", "(11T OR 13T) AND NOT 90T", "active"],
    ],
}


@dataclass(frozen=True)
class DemoUser:
    role: str
    username: str
    password: str


@dataclass(frozen=True)
class DemoSeed:
    summary: str
    users: list[DemoUser]
    dropzone_today: Path  # where to drop a file today (the channel polls it)
    exports: Path  # where the destination writes its files


def workbook_bytes(sheets: Mapping[str, Any]) -> io.BytesIO:
    """An XLSX workbook with one sheet per entry (its rows, header first), in memory."""
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    buffer.seek(0)
    return buffer


def demo_workbook() -> io.BytesIO:
    return workbook_bytes(DEMO_TAXONOMY)


def demo_visitors_seed() -> int:
    """The demo's known visitors: a profile each, mapped to its Acme DPUUID (as an ID sync
    would have done), so that the sample trait files find them. Safe to run again."""
    now = timezone.now()
    Profile.objects.bulk_create(
        [Profile(uuid=visitor_uuid(n)) for n in SEEDED_VISITORS], ignore_conflicts=True
    )
    profiles = dict(
        Profile.objects.filter(uuid__in=[visitor_uuid(n) for n in SEEDED_VISITORS]).values_list(
            "uuid", "pk"
        )
    )
    source = DataSource.objects.get(dpid=21)
    IDMapping.objects.bulk_create(
        [
            IDMapping(
                data_source=source,
                dpuuid=visitor_dpuuid(n),
                profile_id=profiles[visitor_uuid(n)],
                first_seen_at=now,
                last_seen_at=now,
            )
            for n in SEEDED_VISITORS
        ],
        ignore_conflicts=True,
    )
    return len(SEEDED_VISITORS)


@transaction.atomic
def demo_seed() -> DemoSeed:
    result = taxonomy_import(workbook=demo_workbook())
    user_model = get_user_model()
    staff_password = os.environ.get("DEMO_STAFF_PASSWORD", "staff-demo-pass")
    partner_password = os.environ.get("DEMO_PARTNER_PASSWORD", "partner-demo-pass")

    staff, _ = user_model.objects.get_or_create(
        username="staff", defaults={"email": "staff@localhost", "is_staff": True}
    )
    staff.is_staff = staff.is_superuser = True
    staff.set_password(staff_password)
    staff.save()

    partner_user, _ = user_model.objects.get_or_create(
        username="acme", defaults={"email": "data-team@acme.example"}
    )
    partner_user.set_password(partner_password)
    partner_user.save()
    acme = Partner.objects.get(pid=1001)
    visitors = demo_visitors_seed()
    PartnerUser.objects.update_or_create(user=partner_user, defaults={"partner": acme})
    # A local drop zone, polled by the demo's cron scheduler: drop files into
    # <DEMO_DROPZONE>/acme/date=YYYY-MM-DD/.
    dropzone = Path(os.environ.get("DEMO_DROPZONE", settings.BASE_DIR / ".local" / "dropzone"))
    today = dropzone / acme.slug / f"date={timezone.now():%Y-%m-%d}"  # UTC, as the poller reads
    today.mkdir(parents=True, exist_ok=True)
    channel, _ = InboundChannel.objects.update_or_create(
        partner=acme,
        name="Demo drop zone",
        defaults={"kind": InboundChannel.Kind.LOCAL, "prefix": str(dropzone), "active": True},
    )
    # ... and a destination sending the three segments back to <dropzone>/acme/outbound/.
    destination, _ = Destination.objects.update_or_create(
        partner=acme, name="Acme daily segments", defaults={"channel": channel}
    )
    for sid, value in ((500, "sporty-auto"), (501, "auto-or-30-49"), (502, "fans-premium")):
        DestinationSegment.objects.update_or_create(
            destination=destination,
            segment_id=sid,
            defaults={"value": value, "start_date": date(2026, 1, 1)},
        )
    return DemoSeed(
        summary=f"{result.summary()}; {visitors} visitors mapped to Acme IDs"
        f" (acme-0001 … acme-{visitors:04d})",
        users=[
            DemoUser("staff", "staff", staff_password),
            DemoUser("partner", "acme", partner_password),
        ],
        dropzone_today=today,
        exports=dropzone / destination.delivery_folder,
    )
