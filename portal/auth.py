"""Login throttling (django-axes), for every web login: the portal's and the admin's."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The client's address, for counting its attempts. Behind the TLS proxy (the setting
    ``SECURE_PROXY_SSL_HEADER``) every request comes from the proxy, which appends the
    client's address to X-Forwarded-For: its last entry is the one nobody but the proxy
    wrote (earlier ones are the client's own say)."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return str(request.META.get("REMOTE_ADDR", ""))


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' backend, which refuses a locked-out username or address before any
    password is checked. Every web login passes its request (Django's login views and the
    admin's do); a call without one is not a web login (a shell, a command, the test
    client's ``login``), has no address to count, and is left to the next backend."""

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
    return render(
        request,
        "portal/locked.html",
        {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
