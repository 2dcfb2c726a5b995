"""Who calls the ID-sync endpoint (partners/idsync/endpoint.py): the visitor's UUID from
their cookie (signed; a plain one from before signing only for a profile that old), or a
new one, and the cookie and no-cache headers of the answer. Names with a leading
underscore are the endpoint's, not the rest of the apps'.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.utils import timezone

from partners.idsync.cookies import cookie_uuids, signed_value
from segments.models import Profile

NO_CACHE = [
    ("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
]


def new_uuid() -> str:
    """A random platform UUID: 38 decimal digits, from the OS's cryptographic source."""
    return str(secrets.randbelow(9 * 10**37) + 10**37)


# The migration whose application marks when this database's cookies are signed.
SIGNED_COOKIES_MIGRATION = ("partners", "0027_idsync_signed_cookies")
_signed_since: datetime | None = None


def _plain_cookies_before() -> datetime | None:
    """Profiles made before this time may still hold a plain cookie: IDSYNC_PLAIN_COOKIES_BEFORE,
    else the time the marker migration was applied (read once per process); None (no plain
    cookie is taken) while it is not applied."""
    global _signed_since
    if settings.IDSYNC_PLAIN_COOKIES_BEFORE is not None:
        return settings.IDSYNC_PLAIN_COOKIES_BEFORE
    if _signed_since is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT applied FROM django_migrations WHERE app = %s AND name = %s",
                list(SIGNED_COOKIES_MIGRATION),
            )
            row = cursor.fetchone()
        _signed_since = row[0] if row else None
    return _signed_since


def _plain_cookie_taken(uuid: str) -> bool:
    """Whether a plain cookie (issued before cookies were signed) is still taken: its
    profile exists and was made before cookies were signed here (_plain_cookies_before),
    which is not older than IDSYNC_COOKIE_MAX_AGE (past that, every plain cookie has
    expired). A profile made since was never given a plain cookie: a bare UUID for it is
    guessed or leaked, not a visitor's cookie."""
    before = _plain_cookies_before()
    if before is None:
        return False
    if timezone.now() > before + timedelta(seconds=settings.IDSYNC_COOKIE_MAX_AGE):
        return False
    return Profile.objects.filter(uuid=uuid, created_at__lt=before).exists()


def _cookie_visitor(environ: dict[str, Any]) -> tuple[str | None, bool]:
    """The UUID of the visitor's cookie, verified (None: no cookie that is ours), and
    whether the cookie must be issued again, signed (a plain one still taken). A plain
    cookie costs a database read; may raise DatabaseError."""
    found = cookie_uuids(environ.get("HTTP_COOKIE", ""), settings.IDSYNC_COOKIE_NAME)
    if found.signed is not None:
        return found.signed, found.stale
    if found.plain is not None and _plain_cookie_taken(found.plain):
        return found.plain, True
    return None, False


class Visitor(NamedTuple):
    uuid: str
    known: bool  # from the visitor's own (verified) cookie; else new
    headers: list[tuple[str, str]]  # no caching, and the cookie when (re)issued


def _visitor(environ: dict[str, Any]) -> Visitor:
    """The visitor's UUID (from the cookie, or a new one) and the headers of the answer."""
    headers = list(NO_CACHE)
    uuid, reissue = _cookie_visitor(environ)
    known = uuid is not None
    if uuid is None:
        uuid = new_uuid()
    if reissue or not known:
        headers.append(_cookie_header(uuid, environ))
    return Visitor(uuid, known, headers)


def _https(environ: dict[str, Any]) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    return bool(
        getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        and environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip() == "https"
    )


def _cookie_header(uuid: str, environ: dict[str, Any]) -> tuple[str, str]:
    parts = [
        f"{settings.IDSYNC_COOKIE_NAME}={signed_value(uuid)}",
        "Path=/",
        f"Max-Age={settings.IDSYNC_COOKIE_MAX_AGE}",
        "SameSite=None",
        "HttpOnly",
    ]
    if settings.IDSYNC_COOKIE_DOMAIN:
        parts.append(f"Domain={settings.IDSYNC_COOKIE_DOMAIN}")
    if _https(environ):
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))
