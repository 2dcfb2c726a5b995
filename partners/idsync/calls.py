"""The HTTP ID-sync call (SPEC §2.1), parsed. Pure: the raw request target in, the IDs, the
redirect and the consent out, or the errors to answer with.

Three forms: ``/ibs:dpid=<DPID>&dpuuid=<DPUUID>&…`` (parameters in the path, after the
colon), ``/ibs?dpid=…`` (a query), and ``/ibs:d_cid=<DPID>%01<DPUUID>[%01<state>]``
(repeatable). Values are percent-encoded UTF-8; ``+`` is a plus sign, not a space (IDs such
as base64 hold it), and a space is ``%20``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit

from partners.inbound.lines import CONTROL_CHARACTER

MAX_IDS = 10
MAX_IDS_PER_DPID = 3
MAX_DPUUID_CHARS = 255
UUID_PLACEHOLDER = "${DD_UUID}"

# The error codes of the JSON answers (README: "ID sync errors").
UNKNOWN_DPID = 1
INACTIVE_DATA_SOURCE = 2
BAD_ENCODING = 3
COLON_IN_DPUUID = 4
TOO_MANY_IDS = 5
REDIRECT_NOT_ALLOWED = 6
GDPR_INCOMPLETE = 7
NO_CONSENT = 8
MISSING_ID = 9
TOO_MANY_NEW = 10  # over the limits of partners/idsync/limits.py (only /optout says so)


@dataclass(frozen=True)
class CallError:
    code: int
    msg: str


@dataclass
class IbsCall:
    ids: list[tuple[int, str]] = field(default_factory=list)  # (DPID, DPUUID), in call order
    redirect: str | None = None
    errors: list[CallError] = field(default_factory=list)


def _decoded(value: str, what: str, errors: list[CallError]) -> str | None:
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        errors.append(CallError(BAD_ENCODING, f"{what} is not percent-encoded UTF-8"))
        return None


def _dpid(value: str, errors: list[CallError]) -> int | None:
    if not value.isascii() or not value.isdigit() or int(value) == 0 or len(value) > 9:
        errors.append(CallError(UNKNOWN_DPID, f"'{value[:20]}' is not a DPID"))
        return None
    return int(value)


# What a redirect URL may hold as sent: printable ASCII (anything else percent-encoded), so
# that it goes into the Location header byte for byte.
_REDIRECT_CHARS = re.compile(r"[!-~]+")


def _dpuuid(value: str, errors: list[CallError]) -> str | None:
    if not value:
        errors.append(CallError(MISSING_ID, "an empty DPUUID"))
        return None
    # '%3A' once decoded is a DPUUID sent encoded twice ('%253A'): the colon it stands for
    # is refused in files too (SPEC §2.1).
    if ":" in value or "%3a" in value.lower():
        errors.append(CallError(COLON_IN_DPUUID, "a DPUUID must not contain ':' (nor '%3A')"))
        return None
    if len(value) > MAX_DPUUID_CHARS or CONTROL_CHARACTER.search(value):
        errors.append(
            CallError(
                BAD_ENCODING,
                "a DPUUID is at most 255 characters, without tabs or control characters",
            )
        )
        return None
    return value


def _redirect(value: str, errors: list[CallError]) -> str | None:
    decoded = _decoded(value, "redir", errors)
    if decoded is not None and not _REDIRECT_CHARS.fullmatch(decoded):
        errors.append(
            CallError(
                BAD_ENCODING,
                "redir must be a URL of printable ASCII: its own non-ASCII characters"
                " percent-encoded, no spaces or control characters",
            )
        )
        return None
    return decoded


def parse_ibs_call(target: str) -> IbsCall:
    """Parse the raw request target (path and query, still percent-encoded)."""
    call = IbsCall()
    errors = call.errors
    path, _, query = target.partition("?")
    colon_params = path.partition(":")[2] if ":" in path else ""
    params: list[tuple[str, str]] = []
    for chunk in (colon_params, query):
        for pair in chunk.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                params.append((key, value))

    dpid: int | None = None
    dpuuid: str | None = None
    gdpr: str | None = None
    consent: str | None = None
    for key, raw in params:
        if key == "d_cid":
            cid = _decoded(raw, "d_cid", errors)
            if cid is None:
                continue
            parts = cid.split("\x01")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("0", "1", "2")):
                errors.append(CallError(BAD_ENCODING, "d_cid is <DPID>%01<DPUUID>[%01<0|1|2>]"))
                continue
            cid_dpid, cid_dpuuid = _dpid(parts[0], errors), _dpuuid(parts[1], errors)
            if cid_dpid is not None and cid_dpuuid is not None:
                call.ids.append((cid_dpid, cid_dpuuid))
        elif key == "dpid":
            dpid = _dpid(raw, errors)
        elif key == "dpuuid":
            decoded = _decoded(raw, "dpuuid", errors)
            dpuuid = None if decoded is None else _dpuuid(decoded, errors)
        elif key == "redir":
            call.redirect = _redirect(raw, errors)
        elif key == "gdpr":
            gdpr = raw
        elif key == "gdpr_consent":
            consent = _decoded(raw, "gdpr_consent", errors) or ""
    if dpid is not None and dpuuid is not None:
        call.ids.insert(0, (dpid, dpuuid))
    elif not errors and not call.ids:
        errors.append(CallError(MISSING_ID, "give dpid and dpuuid, or d_cid"))

    if len(call.ids) > MAX_IDS:
        errors.append(CallError(TOO_MANY_IDS, f"at most {MAX_IDS} IDs in one call"))
    per_dpid: dict[int, int] = {}
    for cid_dpid, _ in call.ids:
        per_dpid[cid_dpid] = per_dpid.get(cid_dpid, 0) + 1
    if any(n > MAX_IDS_PER_DPID for n in per_dpid.values()):
        errors.append(CallError(TOO_MANY_IDS, f"at most {MAX_IDS_PER_DPID} IDs per DPID"))

    if (gdpr is None) != (consent is None) or gdpr not in (None, "0", "1"):
        errors.append(CallError(GDPR_INCOMPLETE, "gdpr (0 or 1) and gdpr_consent come together"))
    elif gdpr == "1" and not (consent or "").strip():
        errors.append(CallError(NO_CONSENT, "gdpr=1 without a consent string: nothing stored"))
    return call


_HOST = re.compile(r"[a-z0-9.-]+")


def redirect_host_allowed(url: str, allowed_hosts: list[str]) -> bool:
    """Whether ``url`` is an absolute http(s) URL to one of ``allowed_hosts`` (a
    ``*.example.com`` entry allows every subdomain of example.com)."""
    if any(ch in url for ch in "\\\t\r\n\x00 ") or not url.lower().startswith(
        ("http://", "https://")
    ):
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    if not _HOST.fullmatch(host):
        return False
    for allowed in allowed_hosts:
        allowed = allowed.lower()
        if allowed.startswith("*."):
            if host.endswith(allowed[1:]) and host != allowed[2:]:
                return True
        elif host == allowed:
            return True
    return False
