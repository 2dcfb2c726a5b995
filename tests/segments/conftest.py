# Membership upkeep is tested through real inbound batches: the inbound world serves here too.
from tests.partners.inbound.conftest import deliver, world  # noqa: F401
