import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_wsgi_application()

# The ID-sync endpoints (/ibs:, /optout, /idsync/out/) are answered before Django's stack.
from partners.idsync.endpoint import idsync_only, with_idsync_endpoints  # noqa: E402

application = with_idsync_endpoints(django_application)
# The ID-sync pool (README "Production"): those endpoints and nothing else.
idsync_application = with_idsync_endpoints(idsync_only)
