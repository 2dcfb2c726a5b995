"""PostgreSQL advisory locks held for a session: one holder at a time across workers and
hosts, let go of by PostgreSQL itself when the holder's connection drops (a killed worker
leaves no lock behind)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import DatabaseError, connection

# The lock namespaces (the first key), one per kind of work, so their ids never meet.
INBOUND_TURN_LOCK = 0x5332494E  # "S2IN": the batches of a data source, one at a time
OUTBOUND_RUN_LOCK = 0x53324F55  # "S2OU": the runs of a destination, one at a time


@contextlib.contextmanager
def session_lock(namespace: int, key: int, *, wait: bool = False) -> Iterator[bool]:
    """Hold the advisory lock (``namespace``, ``key``) on the default connection, and say
    whether it was had: at once, or, with ``wait``, once its holder lets go."""
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [namespace, key])
            had = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
            row = cursor.fetchone()
            had = bool(row and row[0])
    try:
        yield had
    finally:
        if had:
            # A connection that dropped took the lock with it; that must not hide the error
            # that made it drop.
            with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
