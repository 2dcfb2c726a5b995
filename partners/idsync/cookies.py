"""The visitor's UUID cookie, signed: ``<UUID>:<signature>``.

The signature is an HMAC of the UUID with ``SECRET_KEY`` (Django's signing; a cookie signed
with one of ``SECRET_KEY_FALLBACKS`` is still taken, and issued again with the new key). Only
the cookie carries it: the UUID itself stays the SPEC's 38 digits wherever it goes
(``${DD_UUID}``, ``/idsync/out/``, outbound files), and knowing a visitor's UUID, as partners
do, does not make their cookie. A cookie that does not verify is no cookie: the visitor gets
a new UUID, and nothing is written for the one sent.

Cookies issued before signing hold the bare UUID ("plain"): the endpoint takes one only when
its profile exists and was made before the cookies were signed (``IDSYNC_PLAIN_COOKIES_BEFORE``,
by default the time the marker migration partners/0027 was applied), and issues it again,
signed. Pure apart from reading the settings.
"""

from __future__ import annotations

from typing import NamedTuple

from django.conf import settings
from django.core import signing

SALT = "partners.idsync.visitor-cookie"
UUID_DIGITS = 38
# Browsers send one cookie of a name per domain and path that set it: a header holding more
# than a few is made up, and each costs an HMAC.
MAX_SIGNED_TRIED = 4


def is_uuid(value: str) -> bool:
    return len(value) == UUID_DIGITS and value.isascii() and value.isdigit()


def signed_value(uuid: str) -> str:
    """The cookie's value for ``uuid``."""
    return signing.Signer(salt=SALT).sign(uuid)


def verified_uuid(value: str) -> tuple[str, bool] | None:
    """The UUID of a signed cookie value and whether it was signed with the current key
    (else with one of SECRET_KEY_FALLBACKS: to be issued again); None when the signature
    does not verify."""
    try:
        uuid, current = signing.Signer(salt=SALT, fallback_keys=[]).unsign(value), True
    except signing.BadSignature:
        if not settings.SECRET_KEY_FALLBACKS:
            return None
        try:
            uuid, current = signing.Signer(salt=SALT).unsign(value), False
        except signing.BadSignature:
            return None
    return (uuid, current) if is_uuid(uuid) else None


class CookieUuids(NamedTuple):
    signed: str | None  # the first cookie of the name whose signature verifies
    plain: str | None  # else the first one holding a bare UUID (issued before signing)
    stale: bool = False  # the signed one was signed with a former key


def cookie_uuids(header: str, name: str) -> CookieUuids:
    """What the ``Cookie`` header holds under ``name``. Values are taken as sent: quoted,
    spaced or otherwise altered ones are not ours and count as absent."""
    prefix = name + "="
    plain = None
    tried = 0
    for part in header.split(";"):
        part = part.strip()
        if not part.startswith(prefix):
            continue
        value = part[len(prefix) :]
        if ":" in value:
            if tried < MAX_SIGNED_TRIED:
                tried += 1
                if (verified := verified_uuid(value)) is not None:
                    return CookieUuids(verified[0], None, stale=not verified[1])
        elif plain is None and is_uuid(value):
            plain = value
    return CookieUuids(None, plain)
