"""Field validators for partner data: each error says what is wrong in a partner's words."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from partners.inbound.lines import CONTROL_CHARACTER

DD_UUID_MACRO = "${DD_UUID}"
_HOST_RE = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
    re.IGNORECASE,
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def validate_dpuuid(value: str) -> None:
    if not value:
        raise ValidationError("A DPUUID must not be empty.")
    if ":" in value or "%3a" in value.lower():
        raise ValidationError("A DPUUID must not contain ':' (nor its encoding '%3A').")
    if "\t" in value:
        raise ValidationError("A DPUUID must not contain a tab.")
    if CONTROL_CHARACTER.search(value):
        raise ValidationError("A DPUUID must not contain control characters.")
    if _SURROGATE.search(value):  # only a JSON escape (\ud800) makes one: it is no text
        raise ValidationError("A DPUUID must be text: it holds a lone surrogate (\\ud800-\\udfff).")


def validate_redirect_host(value: str) -> None:
    if not _HOST_RE.fullmatch(value):
        raise ValidationError(
            "'%(host)s' is not a host name (write 'partner.example' or '*.partner.example', "
            "without scheme, path or port).",
            params={"host": value},
        )


def validate_idsync_url_template(value: str) -> None:
    if not value:
        return
    if not value.startswith(("https://", "http://")):
        raise ValidationError("The ID-sync URL must start with https:// (or http://).")
    if DD_UUID_MACRO not in value:
        raise ValidationError(f"The ID-sync URL must contain {DD_UUID_MACRO}, where our UUID goes.")
