from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    """Installs :class:`portal.admin_site.PortalAdminSite` as ``django.contrib.admin.site``."""

    default_site = "portal.admin_site.PortalAdminSite"
