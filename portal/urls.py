from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import include, path


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", lambda request: redirect("portal:home")),
    path("healthz", health, name="health"),
    path("admin/", admin.site.urls),
    path("portal/", include("partners.portal.urls")),
    path("api/v1/", include("partners.portal.api_urls")),
]
