from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path

from partners.portal.views import favicon_view
from portal.health import health_view

urlpatterns = [
    path("", lambda request: redirect("portal:home")),
    path("healthz", health_view, name="health"),
    path("favicon.ico", favicon_view, name="favicon"),
    path("admin/", admin.site.urls),
    path("portal/", include("partners.portal.urls")),
    path("api/v1/", include("partners.portal.api_urls")),
]
