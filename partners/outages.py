"""A database outage, told apart from everything else that can go wrong, and waited out.

A batch, a receipt e-mail or an export that meets a database that is down has done nothing
wrong: it must wait for the database, however long that takes, and not use up the retries
that are there for its own faults (a file that crashes the parser, an SMTP server that
refuses). A job wrapped in :func:`waits_out_database_outages` returns RQ's ``Retry`` when
the database is unreachable: RQ runs it again later (``DATABASE_OUTAGE_RETRY_INTERVALS``,
the last interval repeated with no end) without counting it against the job's own retries,
and the sweeps see a job still on its way (scheduled), not one that failed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import psycopg
from django.conf import settings
from django.db import InterfaceError, connections
from rq import Retry

logger = logging.getLogger(__name__)

# SQLSTATEs of a server going away or not there yet: class 08 (connection exception), and
# admin_shutdown, crash_shutdown, cannot_connect_now. Anything else (a statement timeout,
# a deadlock, a bad row) is about the work, not the database being there.
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03"})
# As many tries as it takes: an outage ends when the database is back, not after a count.
_NO_END = 10**9

P = ParamSpec("P")
R = TypeVar("R")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be reached: refused or
    lost connections, a server shutting down or starting up."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InterfaceError | psycopg.InterfaceError):
            return True  # Django's "connection already closed", psycopg's closed connection
        if isinstance(current, psycopg.OperationalError):
            state = current.sqlstate
            if state is None or state.startswith("08") or state in _OUTAGE_STATES:
                return True
        current = current.__cause__ or current.__context__
    return False


def connections_drop() -> None:
    """Close every database connection of this process without asking the server (it may be
    gone): the next query opens a new one."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:  # a dead connection may fail to close: it is dropped all the same
            connection.connection = None


def waits_out_database_outages(job: Callable[P, R]) -> Callable[P, R | Retry]:
    """Make an RQ job wait for the database while it is down (see the module's text)."""

    @functools.wraps(job)
    def patient(*args: P.args, **kwargs: P.kwargs) -> R | Retry:
        try:
            return job(*args, **kwargs)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            logger.warning("%s waits for the database: %s", job.__name__, exc)
            connections_drop()
            return later(settings.DATABASE_OUTAGE_RETRY_INTERVALS)

    return patient


def later(intervals: list[int]) -> Retry:
    """RQ's ``Retry`` for a job that cannot do its work yet (not a failure of its own): it
    runs again after ``intervals``, the last one repeated, with no end."""
    return Retry(max=_NO_END, interval=intervals)
