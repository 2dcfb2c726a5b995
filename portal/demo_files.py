"""The demo's visitors and sample files: pure, deterministic, so the files in ``demo/`` are
exactly what :func:`demo_files` makes (a test checks it) and match the seeded ID mappings.

The story the README's walkthrough tells with them:

- ``make demo`` seeds visitors 1 to 400 with their Acme DPUUIDs (``acme-0001`` …).
- ``adobe_id_0_21_…`` syncs visitors 401 to 500: send it first, or their trait lines find no
  matching ID.
- ``ftp_dpm_21_1764633600.sync.gz`` (day 1) realizes traits 10 to 13 for visitors 1 to 500: the
  demo segments 500 to 502 fill.
- ``ftp_dpm_21_1764640800.sync`` holds the typical mistakes, one of each.
- ``ftp_dpm_21_1764720000.sync.gz`` (day 2), for the drop zone: removals and new traits.
"""

from __future__ import annotations

import gzip

SEEDED_VISITORS = range(1, 401)  # mapped by `make demo`
SYNCED_VISITORS = range(401, 501)  # mapped by the ID-sync sample file
IDSYNC_FILE = "adobe_id_0_21_1764633600.sync"
DAY1_FILE = "ftp_dpm_21_1764633600.sync.gz"
MISTAKES_FILE = "ftp_dpm_21_1764640800.sync"
DAY2_FILE = "ftp_dpm_21_1764720000.sync.gz"


def visitor_uuid(n: int) -> str:
    """The platform UUID (38 digits) of demo visitor ``n``."""
    return f"7{n:037d}"


def visitor_dpuuid(n: int) -> str:
    """Acme's own ID of demo visitor ``n``."""
    return f"acme-{n:04d}"


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)  # mtime 0: the same bytes every time


def _day1_signals(n: int) -> str:
    signals = []
    if n % 3 == 0:
        signals.append("d_sid=10")  # Auto intenders
    if n % 4 in (0, 1):
        signals.append(f"sport={'football' if n % 4 == 0 else 'tennis'}")  # Sports fans
    signals.append(f"age={20 + n % 40}")  # Age 30 to 49 for some
    if n % 10 == 0:
        signals.append("ic=ACME_PREMIUM")  # Premium customers
    return ",".join(signals)


def _day2_signals(n: int) -> str:
    if n % 3 == 0:
        return "10:0"  # no longer an auto intender
    if n % 5 == 0:
        return "d_sid=10,sport=tennis"
    return f"age={21 + n % 40}"


MISTAKES = (
    f"{visitor_dpuuid(1)}\td_sid=10,sport=football\n"  # a good line
    f"{visitor_dpuuid(2)} d_sid=10\n"  # a space where the tab should be: format error
    f"{visitor_dpuuid(3)}\td_sid=ten\n"  # a SID must be a number: format error
    "acme-9999\td_sid=10\n"  # never synced: no matching ID
    "acme:0004\td_sid=10\n"  # ':' is not allowed in a DPUUID: invalid ID
    f"{visitor_dpuuid(5)}\tcolor=blue\n"  # no trait has a rule on color: no trait realized
    f"{visitor_dpuuid(6)}\td_sid=90\n"  # a trait of data source 22: failed validation
    "\n"  # blank lines are skipped
    f"{visitor_dpuuid(7)}\tage=35\n"  # a good line
)


def demo_files() -> dict[str, bytes]:
    """The sample files, by name."""
    idsync = "".join(f"{visitor_uuid(n)}\t{visitor_dpuuid(n)}\n" for n in SYNCED_VISITORS)
    visitors = [*SEEDED_VISITORS, *SYNCED_VISITORS]
    day1 = "".join(f"{visitor_dpuuid(n)}\t{_day1_signals(n)}\n" for n in visitors)
    day2 = "".join(f"{visitor_dpuuid(n)}\t{_day2_signals(n)}\n" for n in visitors[::2])
    return {
        IDSYNC_FILE: idsync.encode(),
        DAY1_FILE: _gzip(day1),
        MISTAKES_FILE: MISTAKES.encode(),
        DAY2_FILE: _gzip(day2),
    }
