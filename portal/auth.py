"""Login throttling (django-axes), for every web login: the portal's and the admin's."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt, AccessLog
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

logger = logging.getLogger(__name__)


# The one header the README's proxy sets to the address it saw the client connect from
# (nginx: ``proxy_set_header X-Real-IP $remote_addr;``, which replaces whatever the client
# sent under that name). Nothing else a client can send (X-Forwarded-For, Forwarded, ...)
# is ever read.
CLIENT_ADDRESS_HEADER = "HTTP_X_REAL_IP"
# An IPv6 client usually holds a whole /64 (and can change address within it at will), so it
# is counted as its /64, as django-ratelimit does.
IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_warned_proxies: set[str] = set()


@functools.lru_cache(maxsize=8)
def _trusted(names: tuple[str, ...]) -> tuple[bool, tuple[Network, ...]]:
    """(everyone, networks) of the setting TRUSTED_PROXIES (``*``, addresses, networks)."""
    if "*" in names:
        return True, ()
    return False, tuple(ipaddress.ip_network(name, strict=False) for name in names)


def _address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_trusted_proxy(peer: str) -> bool:
    """Whether the peer may say who the client is: one of TRUSTED_PROXIES (the setting
    FORWARDED_ALLOW_IPS, gunicorn's own list). A peer with no address is a Unix socket,
    which only local processes reach (gunicorn trusts those too)."""
    everyone, networks = _trusted(tuple(settings.TRUSTED_PROXIES))
    if everyone or peer == "":
        return True
    address = _address(peer)
    return address is not None and any(address in network for network in networks)


def told_client_address(meta: Mapping[str, Any]) -> str | None:
    """The client's address as :func:`client_address_of` counts it, or None when a trusted
    proxy sent the request without saying whose it is (no valid X-Real-IP). For counts that
    must not lump every client behind a misconfigured proxy together (ID sync)."""
    peer = str(meta.get("REMOTE_ADDR") or "")
    chosen = peer
    if is_trusted_proxy(peer):
        told = _address(meta.get(CLIENT_ADDRESS_HEADER, ""))
        if told is None:
            return None
        chosen = str(told)
    address = _address(chosen)
    if address is None:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
        return str(network.network_address)
    return str(address)


def client_address_of(meta: Mapping[str, Any]) -> str:
    """The client's address, for counting its attempts, from a request's META (or a WSGI
    environ): the peer's own address, unless the peer is a trusted proxy (TRUSTED_PROXIES),
    in which case the address the proxy puts in X-Real-IP. An IPv6 address counts as its
    /64 (written as the network's first address); an IPv4-mapped one as the IPv4 address.
    Empty when there is none (a Unix socket without the header). The one rule for every
    count of the portal's and of ID sync (partners/idsync/limits.py)."""
    told = told_client_address(meta)
    if told is not None:
        return told
    peer = str(meta.get("REMOTE_ADDR") or "")
    if peer not in _warned_proxies and not settings.DEBUG:
        # Every client behind this proxy now counts as one: say so, once per process
        # (not in DEBUG: `make demo`'s browser reaches the server directly, from here).
        _warned_proxies.add(peer)
        logger.warning(
            "Requests from the proxy %r carry no valid X-Real-IP: every client behind it"
            " counts as one address for login throttling (README, Production: the"
            " proxy block).",
            peer,
        )
    address = _address(peer)
    return str(address) if address is not None else ""


def client_address(request: HttpRequest) -> str:
    """AXES_CLIENT_IP_CALLABLE and the password-reset limits' key: see client_address_of."""
    return client_address_of(request.META)


def attempt_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """AXES_USERNAME_CALLABLE: the username typed, as django-axes takes it, cut to the width
    of its records. Django's login forms do not check the username's length (their
    max_length only sizes the input box), so a longer one reached the record and the login
    answered 500; no account has one (usernames are at most 150 characters)."""
    source = credentials if credentials else request.POST
    username = source.get("username")
    if username is None:
        return None
    return str(username)[: AccessAttempt._meta.get_field("username").max_length]


class LoginAttemptsHandler(AxesDatabaseHandler):
    """django-axes' database handler (AXES_HANDLER): failed logins are counted per pair
    (username, client address) by AXES_LOCKOUT_PARAMETERS, so a stranger's failures never
    lock the owner out at their own address. On top, a much higher limit per address alone
    (LOGIN_ADDRESS_FAILURE_LIMIT failures within the cool-off, whatever the usernames) stops
    one address from trying a few passwords on each of many accounts; it pauses the logins
    of that address only, and not those of a username that logged in from that address
    lately (its owner, behind the same office NAT as the one failing). A success resets its
    own pair's count, never the address's."""

    def address_failures(self, request: HttpRequest) -> int:
        address = getattr(request, "axes_ip_address", "") or ""
        if not address:  # no address (a Unix socket without the header): nothing to count
            return 0
        failures = AccessAttempt.objects.filter(
            ip_address=address, attempt_time__gte=get_cool_off_threshold(request)
        ).aggregate(total=Sum("failures_since_start"))["total"]
        return int(failures or 0)

    def known_here(self, request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
        """Whether the username tried logged in from this client address within
        LOGIN_KNOWN_ADDRESS_DAYS (django-axes' AccessLog of successful logins): its owner at
        their usual address (an office behind one NAT address) is not paused by what others
        there fail. Only its own pair's limit applies to it."""
        days = settings.LOGIN_KNOWN_ADDRESS_DAYS
        address = getattr(request, "axes_ip_address", "") or ""
        username = get_client_username(request, credentials)
        if not (days and address and username):
            return False
        since = timezone.now() - timedelta(days=days)
        return AccessLog.objects.filter(
            username=username, ip_address=address, attempt_time__gte=since
        ).exists()

    def address_locked(
        self, request: HttpRequest, credentials: dict[str, Any] | None = None
    ) -> bool:
        """Past LOGIN_ADDRESS_FAILURE_LIMIT failures from this address, for a username not
        known here (:meth:`known_here`)."""
        limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
        if not limit or self.address_failures(request) < limit:
            return False
        return not self.known_here(request, credentials)

    def is_locked(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
        return super().is_locked(request, credentials) or self.address_locked(request, credentials)

    def user_login_failed(
        self,
        sender: Any,
        credentials: dict[str, Any],
        request: HttpRequest | None = None,
        **kwargs: Any,
    ) -> None:
        super().user_login_failed(sender, credentials, request=request, **kwargs)
        # The pair's count decides axes' own lockout flag; the address's decides it here,
        # so a login refused for the address shows the lockout page, not "wrong password".
        if (
            request is not None
            and not getattr(request, "axes_locked_out", False)
            and self.address_locked(request, credentials)
        ):
            request.axes_locked_out = True  # type: ignore[attr-defined]
            request.axes_credentials = credentials  # type: ignore[attr-defined]
            request.login_locked_for_address = True  # type: ignore[attr-defined]


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' backend, which refuses a locked-out pair (username, address), or an
    address past its own limit, before any password is checked. Every web login passes its
    request (Django's login views and the admin's do); a call without one is not a web login
    (a shell, a command, the test client's ``login``), has no address to count, and is left
    to the next backend."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def lockout_response(request: HttpRequest, response: Any = None, credentials: Any = None) -> Any:
    """What a locked-out login sees (portal and admin): the reason and when to come back,
    in the portal's look, as 429 Too Many Requests."""
    from django.shortcuts import render

    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    context = {
        "minutes": minutes,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "address_limit": settings.LOGIN_ADDRESS_FAILURE_LIMIT,
        "address_locked": getattr(request, "login_locked_for_address", False),
        "known_days": settings.LOGIN_KNOWN_ADDRESS_DAYS,
    }
    return render(request, "portal/locked.html", context, status=429)


def login_records_prune() -> int:
    """Delete django-axes' records of past logins (AccessLog, AccessFailureLog) older than
    LOGIN_RECORDS_RETENTION_DAYS, and never younger than LOGIN_KNOWN_ADDRESS_DAYS (which
    reads them); how many. Without it they grow with every login, for ever."""
    days = max(settings.LOGIN_RECORDS_RETENTION_DAYS, settings.LOGIN_KNOWN_ADDRESS_DAYS)
    handler = AxesDatabaseHandler()
    return handler.reset_logs(age_days=days) + handler.reset_failure_logs(age_days=days)
