"""Who the partner of a portal request is: the user's own partner, or for staff, the partner
they chose to view the portal as (from the admin). Everything a portal page shows is read
through this partner, so another partner's rows answer 404."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect

from partners.models import Partner, PartnerUser

VIEW_AS_SESSION_KEY = "portal_view_as_pid"


def request_partner(request: HttpRequest) -> Partner | None:
    user = request.user
    if not user.is_authenticated:
        return None
    if user.is_staff:
        pid = request.session.get(VIEW_AS_SESSION_KEY)
        return Partner.objects.filter(pk=pid).first() if pid else None
    link = PartnerUser.objects.select_related("partner").filter(user=user).first()
    return link.partner if link and link.partner.active else None


def partner_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Portal pages: a logged-in partner user (or staff viewing as a partner), else login."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        partner = request_partner(request)
        if partner is None:
            if request.user.is_authenticated and request.user.is_staff:
                return redirect("admin:partners_partner_changelist")  # choose a partner there
            return redirect_to_login(request.get_full_path())
        request.partner = partner  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped
