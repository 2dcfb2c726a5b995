"""What the benchmarks share: a scratch database next to DATABASE_URL's, made anew."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def scratch_database(suffix: str) -> str:
    """Drop and create ``<DATABASE_URL's name>_<suffix>``; return its URL."""
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"{parts.path.lstrip('/') or 'postgres'}_{suffix}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))
