# The inbound world, delivery and PGP key fixtures serve every partners test (receipts build
# on them; the portal's checks read PGP files).
from tests.partners.inbound.conftest import deliver, platform_key, world  # noqa: F401
