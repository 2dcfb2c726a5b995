"""Middleware of the portal's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

NUL = "\x00"
NUL_REFUSED = (
    "The address holds a NUL character (%00), which no page, search or filter takes:"
    " remove it and try again."
)


def nul_place(request: HttpRequest) -> str | None:
    """Where the request's address holds a NUL: the name of the query parameter (its key or
    one of its values), "" for the path itself; None when it holds none."""
    if NUL in request.path:
        return ""
    for key, values in request.GET.lists():
        if NUL in key or any(NUL in value for value in values):
            return key.replace(NUL, "")
    return None


class NulRefusedMiddleware:
    """A request whose path or query holds a NUL character is answered 400 with the reason
    (in the API's JSON shape under /api/, the portal's look elsewhere) before any view sees
    it. PostgreSQL text cannot hold NUL, so such a value reaching a query (an admin list
    filter, a search) failed in the database driver: a 500. Form fields refuse it already
    (Django's ProhibitNullCharactersValidator); filters and other parameters did not."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        place = nul_place(request)
        if place is None:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            error = {"msg": NUL_REFUSED, **({"field": place} if place else {})}
            return JsonResponse({"errors": [error]}, status=400)
        # Back to the same page without its query (a staff member in an admin list, a
        # partner on My files): the portal's login would be the wrong way for either.
        back = {"back_url": request.path, "back_label": "Open the page without it"} if place else {}
        return render(request, "portal/message.html", {"message": NUL_REFUSED, **back}, status=400)
